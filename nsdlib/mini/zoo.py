"""The mini model zoo: small VDVAE, CLIP and diffusion models trained on mini-NSD.

The real pretrained models cannot be fetched offline, so ``models="mini"`` uses small
versions of the same classes, trained here on mini-NSD's stimuli and captions:

- a small :class:`~nsdlib.vdvae.VDVAE` (:data:`nsdlib.vdvae.MINI`, 32 x 32 images, 37
  decoder blocks coarse to fine, so "the first 15 / 31 blocks" keep their meaning), trained
  on the negative ELBO after a KL warm-up of its coarse blocks (:class:`KLWarmup`);
- a small CLIP (transformers' ``CLIPModel``) with a word-level tokenizer for mini-NSD's
  caption vocabulary, 77 text positions and 257 vision tokens (64 x 64 images, patch 4),
  trained contrastively on (image, caption) pairs;
- a small Versatile-Diffusion-style latent diffusion model (diffusers' ``AutoencoderKL``,
  image UNet and text UNet mixed by dual transformers), conditioned on the small CLIP's
  text and vision embeddings (see :mod:`nsdlib.diffusion`), on a zero-terminal-SNR
  schedule with v-prediction (:data:`MINI_SCHEDULE`).

All three train on the images that are *not* in the shared test set, so the test stimuli
the book reconstructs are held out from every model. Training is resumable (a checkpoint
is written atomically every few hundred steps and picked up again after an interruption),
shows progress bars and writes the models under ``<workdir>/models/mini/``. On a CPU with
two cores or more the CLIP (then the VDVAE) and the diffusion autoencoder train side by side
in two processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..clip import ClipEmbedder
from ..config import default_workdir, resolve_device
from ..diffusion import (
    DualGuidedDiffusion,
    DualTransformer,
    make_dual_guided,
    random_components,
    save_components,
    set_mixing,
    vae_input,
)
from ..images import resize
from ..metrics import ssim, two_way_identification
from ..nsd import NSDLayout, read_captions, read_expdesign, read_stim_info, read_stimuli
from ..store import atomic_path, atomic_write
from ..vdvae import MINI, VDVAE, load_vdvae, parse_blocks, reconstruct_images, save_vdvae
from .experiment import read_manifest
from .scene import load_scene_networks, scene_networks_present, train_scene_networks

__all__ = [
    "MINI_MODELS_VERSION",
    "MINI_SCHEDULE",
    "KLWarmup",
    "RECIPES",
    "MiniModelsMissing",
    "Recipe",
    "TrainSchedule",
    "build_caption_tokenizer",
    "ensure_models",
    "evaluate_models",
    "locate",
    "mini_clip_config",
    "models_folder",
    "read_training_set",
    "train_clip",
    "train_loop",
    "train_models",
    "train_unet",
    "train_vae",
    "train_vdvae",
]

#: Bumped whenever a training recipe changes; part of every mini model's cache key.
MINI_MODELS_VERSION = 3


class MiniModelsMissing(FileNotFoundError):
    """The mini models have not been trained (or shipped) for this mini-NSD."""


# ------------------------------------------------------------------------------------ data
@dataclasses.dataclass
class TrainingSet:
    """mini-NSD stimuli and captions for training, the shared test images held out.

    Attributes
    ----------
    ids : ndarray of shape (n,)
        0-based NSD ids (rows of ``imgBrick``).
    images64 : ndarray of shape (n, 64, 64, 3), uint8
    captions : list of list of str
        Five captions per image.
    """

    ids: np.ndarray
    images64: np.ndarray
    captions: list[list[str]]


def read_training_set(root: str | Path, *, max_images: int | None = None, size: int = 64) -> TrainingSet:
    """mini-NSD's non-shared stimuli (resized to ``size``) and their captions.

    Read with the same readers as the subject data (:mod:`nsdlib.nsd`), so the models see
    exactly the pixels and captions the book uses.
    """
    layout = NSDLayout(root, dataset="mini")
    design = read_expdesign(layout)
    shared = set((design.sharedix - 1).tolist())
    n_images = len(read_stim_info(layout))
    ids = np.array([i for i in range(n_images) if i not in shared], dtype=np.int64)
    if max_images is not None:
        ids = ids[:max_images]
    return TrainingSet(ids, read_stimuli(layout, ids, size=size), read_captions(layout, ids))


# ------------------------------------------------------------------------------ training
@dataclasses.dataclass(frozen=True)
class TrainSchedule:
    """Steps, batch size and learning rate of one training run."""

    steps: int
    batch_size: int
    lr: float
    warmup: int = 50
    checkpoint_every: int = 200
    grad_clip: float = 1.0

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth of ``lr``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _batches(n: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        for start in range(0, n - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]


def train_loop(model: torch.nn.Module, loss_fn: Callable[[np.ndarray, torch.Generator, int], torch.Tensor],
               n_items: int, schedule: TrainSchedule, checkpoint: Path, *, seed: int = 0, desc: str = "training",
               progress: bool = True, stop_after: int | None = None) -> list[float]:
    """A resumable AdamW loop over random mini-batches of item indices.

    ``loss_fn(indices, generator, step)`` returns the mean loss of a batch. The model, the
    optimiser, the step and the random state are checkpointed atomically every
    ``schedule.checkpoint_every`` steps and at the end; a run that finds a checkpoint
    continues from it and ends where an uninterrupted run would. ``stop_after`` ends the
    loop early after that many steps (to simulate an interruption in tests).

    Returns the loss of every step run in this call.
    """
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=schedule.lr, weight_decay=0.01)
    start, history = 0, []
    gen = torch.Generator().manual_seed(seed)
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start = int(state["step"])
        history = list(state["history"].tolist())
    batches = _batches(n_items, schedule.batch_size, seed)
    for _ in range(start):  # replay the batch order to where the checkpoint stopped
        next(batches)

    def save(step):
        with atomic_path(checkpoint) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": torch.tensor(step),
                        "generator": gen.get_state(), "history": torch.tensor(history)}, tmp)

    model.train()
    ran = []
    bar = tqdm(range(start, schedule.steps), desc=desc, disable=not progress, initial=start, total=schedule.steps)
    for step in bar:
        if step and step % schedule.checkpoint_every == 0 and step != start:
            save(step)
        if stop_after is not None and len(ran) >= stop_after:
            save(step)
            return ran
        for group in opt.param_groups:
            group["lr"] = schedule.lr_at(step)
        loss = loss_fn(next(batches), gen, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), schedule.grad_clip)
        opt.step()
        history.append(float(loss.detach()))
        ran.append(history[-1])
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(history[-10:]):.4f}")
    save(schedule.steps)
    model.eval()
    return ran


# --------------------------------------------------------------------------------- VDVAE
def mini_vdvae_config():
    """The zoo's VDVAE: :data:`nsdlib.vdvae.MINI`'s 37 decoder blocks (coarse to fine, so
    n_layers 15 and 31 keep their meaning) at width 32 with a bottleneck of half the width
    (16 channels). On a CPU it trains about as fast as the quarter-width bottleneck of
    ImageNet-64's VDVAE (8 channels at this width) and learns far more in the same steps."""
    return dataclasses.replace(MINI, width=32, bottleneck_multiple=0.5)


@dataclasses.dataclass(frozen=True)
class KLWarmup:
    """Weight of each decoder block's KL term in the VDVAE's loss, step by step.

    Blocks at resolutions up to ``max_resolution`` get ``start`` until step ``hold``, then a
    weight rising linearly to 1 at step ``full``, and 1 from there on; finer blocks always
    get 1. Training thus ends on the plain negative ELBO. A weight below 1 early on ("KL
    warm-up", Sønderby et al. 2016) keeps the posteriors of the coarse blocks from
    collapsing onto their priors before the decoder has learnt to use them; keeping the
    finest blocks at 1 leaves little information in the blocks that stage 1 never predicts,
    so that sampling them from their priors adds little noise. The default (1 everywhere,
    throughout) is the ELBO.
    """

    start: float = 1.0
    hold: int = 0
    full: int = 0
    max_resolution: int | None = None

    def __post_init__(self):
        if not 0.0 < self.start <= 1.0 or not 0 <= self.hold <= self.full:
            raise ValueError(f"KLWarmup needs 0 < start <= 1 and 0 <= hold <= full; found {self}")

    def at(self, step: int) -> float:
        """The weight of the warmed-up blocks at ``step`` (0-based)."""
        if step < self.hold:
            return self.start
        if step >= self.full:
            return 1.0
        return self.start + (1.0 - self.start) * (step - self.hold) / (self.full - self.hold)

    def weights(self, config, step: int) -> torch.Tensor:
        """Per-decoder-block KL weights (n_dec_blocks,) of a :class:`~nsdlib.vdvae.VDVAEConfig` at ``step``."""
        w = self.at(step)
        res = [r for r, _, _ in parse_blocks(config.dec_blocks)]
        return torch.tensor([w if self.max_resolution is None or r <= self.max_resolution else 1.0 for r in res])


def train_vdvae(images32: np.ndarray, out: Path, schedule: TrainSchedule, *, seed: int = 0, config=None,
                kl_warmup: KLWarmup = KLWarmup(), progress: bool = True, stop_after: int | None = None):
    """Train a small VDVAE on uint8 images (n, 32, 32, 3); save it to ``out``.

    The loss is the distortion plus each decoder block's KL weighted by
    ``kl_warmup.weights(config, step)``: the negative ELBO once the warm-up is over.
    """
    config = config or mini_vdvae_config()
    torch.manual_seed(seed)
    model = VDVAE(config)
    data = torch.from_numpy(images32)

    def loss_fn(idx, gen, step):
        x = data[idx]
        if torch.rand((), generator=gen) < 0.5:  # horizontal flips: scenes have no handedness
            x = x.flip(2)
        terms = model(x)
        return (terms["distortion"] + terms["block_rates"] @ kl_warmup.weights(config, step)).mean()

    losses = train_loop(model, loss_fn, len(data), schedule, out.with_suffix(".ckpt"), seed=seed,
                        desc="mini VDVAE", progress=progress, stop_after=stop_after)
    if stop_after is None:
        save_vdvae(model, out)
    return model, losses


# ---------------------------------------------------------------------------------- CLIP
_WORD = re.compile(r"[a-z]+|[0-9]+|[^\sa-z0-9]")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def build_caption_tokenizer(captions: list[str], max_length: int = 77):
    """A word-level tokenizer (transformers ``PreTrainedTokenizerFast``) for a caption vocabulary.

    Ids: 0 pad, 1 unknown, then the words in sorted order, then start-of-text and, last,
    end-of-text, so that the end-of-text token has the largest id, as in OpenAI's CLIP.
    Every encoding is ``<|startoftext|> words <|endoftext|>`` padded to ``max_length``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for c in captions for w in _words(c)})
    vocab = {"<|pad|>": 0, "<|unk|>": 1}
    vocab.update({w: i + 2 for i, w in enumerate(words)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = bos, eos
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>",
        unk_token="<|unk|>", model_max_length=max_length, padding_side="right")


def mini_clip_config(tokenizer, *, hidden: int = 64, layers: int = 2, heads: int = 4, projection_dim: int = 64,
                     image_size: int = 64, patch_size: int = 4):
    """A small ``CLIPConfig``: 77 text positions and (image_size / patch_size)² + 1 = 257 vision tokens."""
    from transformers import CLIPConfig

    text = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id, projection_dim=projection_dim)
    vision = dict(image_size=image_size, patch_size=patch_size, hidden_size=hidden, intermediate_size=4 * hidden,
                  num_hidden_layers=layers, num_attention_heads=heads, projection_dim=projection_dim)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's pixel normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _clip_processor(size: int):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))


def train_clip(images64: np.ndarray, captions: list[list[str]], out: Path, schedule: TrainSchedule, *, seed: int = 0,
               progress: bool = True, stop_after: int | None = None, **config_kwargs):
    """Train a small CLIP contrastively on (image, one of its captions) pairs.

    Pixels go through the same image processor that :class:`nsdlib.clip.ClipEmbedder`
    uses later. The model, tokenizer and image processor are saved to the folder ``out``
    (``ClipEmbedder.from_pretrained(out)`` reads it).
    """
    from transformers import CLIPModel

    tokenizer = build_caption_tokenizer([c for caps in captions for c in caps])
    torch.manual_seed(seed)
    model = CLIPModel(mini_clip_config(tokenizer, **config_kwargs))
    embedder = ClipEmbedder(model, tokenizer, _clip_processor(model.config.vision_config.image_size))
    pixels = torch.cat([embedder.pixel_values(images64[i:i + 256]) for i in range(0, len(images64), 256)])
    n_caps = np.array([len(c) for c in captions])
    enc = tokenizer([c for caps in captions for c in caps], padding="max_length", max_length=77,
                    truncation=True, return_tensors="pt")
    offsets = np.concatenate([[0], np.cumsum(n_caps)[:-1]])

    def loss_fn(idx, gen, step):
        pick = offsets[idx] + (torch.randint(0, 1 << 30, (len(idx),), generator=gen).numpy() % n_caps[idx])
        # no flip augmentation: captions name left and right
        outputs = model(input_ids=enc["input_ids"][pick], attention_mask=enc["attention_mask"][pick],
                        pixel_values=pixels[idx], return_loss=True)
        return outputs.loss

    out = Path(out)
    losses = train_loop(model, loss_fn, len(pixels), schedule, out.with_suffix(".ckpt"), seed=seed,
                        desc="mini CLIP", progress=progress, stop_after=stop_after)
    if stop_after is None:
        _save_pretrained_atomically(out, [model, tokenizer, embedder.image_processor])
    return embedder, losses


def _save_pretrained_atomically(folder: Path, objects) -> Path:
    """``save_pretrained`` every object into a temporary sibling folder, then rename it."""
    import shutil
    import tempfile

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        for obj in objects:
            obj.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# ---------------------------------------------------------------------------- the zoo
def _write_manifest(folder: Path, info: dict) -> None:
    with atomic_write(folder / "manifest.json", "w") as fh:
        json.dump(info, fh, indent=1)


# ----------------------------------------------------------------------------- diffusion
def train_vae(images: np.ndarray, vae, schedule: TrainSchedule, checkpoint: Path, *, seed: int = 0,
              kl_weight: float = 1e-6, progress: bool = True, stop_after: int | None = None) -> list[float]:
    """Train an ``AutoencoderKL`` on uint8 images by pixel MSE plus a small KL term.

    Afterwards its ``scaling_factor`` is set to one over the standard deviation of the
    training latents, as latent diffusion does, so the diffusion model sees unit-variance latents.
    """
    data = vae_input(images, vae.config.sample_size)

    def loss_fn(idx, gen, step):
        x = data[idx]
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        kl = post.kl().mean() / x[0].numel()
        return F.mse_loss(rec, x) + kl_weight * kl

    losses = train_loop(vae, loss_fn, len(data), schedule, checkpoint, seed=seed, desc="mini VAE",
                        progress=progress, stop_after=stop_after)
    if stop_after is None:
        with torch.no_grad():
            z = torch.cat([vae.encode(data[i:i + 64]).latent_dist.mode() for i in range(0, len(data), 64)])
        vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return losses


def train_unet(latents: torch.Tensor, text_embeds: np.ndarray, vision_embeds: np.ndarray, uncond: tuple,
               unet, scheduler_config: dict, schedule: TrainSchedule, checkpoint: Path, *, seed: int = 0,
               p_drop: float = 0.15, progress: bool = True, stop_after: int | None = None) -> list[float]:
    """Train a dual-guided image UNet on scaled VAE latents.

    The target is the scheduler config's ``prediction_type``: the noise (``"epsilon"``,
    Versatile Diffusion's) or the velocity (``"v_prediction"``, the zoo's, with a
    zero-terminal-SNR schedule when ``rescale_betas_zero_snr`` is set). Each step picks a
    text weight of 0 (vision only), 1 (text only) or 0.4 (the paper's mix), and replaces each
    condition by its unconditional embedding with probability ``p_drop``, so that both
    guidance paths and classifier-free guidance work at sampling time.
    """
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler(**{k: v for k, v in scheduler_config.items()
                                   if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                            "prediction_type", "rescale_betas_zero_snr")})
    velocity = noise_sched.config.prediction_type == "v_prediction"
    text = torch.from_numpy(np.asarray(text_embeds, np.float32))
    vision = torch.from_numpy(np.asarray(vision_embeds, np.float32))
    u_text, u_vision = (torch.from_numpy(np.asarray(u, np.float32)) for u in uncond)
    weights = (0.0, 1.0, 0.4)
    n_t = noise_sched.config.num_train_timesteps

    def loss_fn(idx, gen, step):
        b = len(idx)
        z0 = latents[idx]
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, n_t, (b,), generator=gen)
        zt = noise_sched.add_noise(z0, noise, t)
        drop_t = torch.rand(b, generator=gen) < p_drop
        drop_v = torch.rand(b, generator=gen) < p_drop
        ctx_t = torch.where(drop_t[:, None, None], u_text[None], text[idx])
        ctx_v = torch.where(drop_v[:, None, None], u_vision[None], vision[idx])
        set_mixing(unet, weights[int(torch.randint(0, 3, (), generator=gen))])
        pred = unet(zt, t, encoder_hidden_states=torch.cat([ctx_t, ctx_v], dim=1)).sample
        return F.mse_loss(pred, noise_sched.get_velocity(z0, noise, t) if velocity else noise)

    return train_loop(unet, loss_fn, len(latents), schedule, checkpoint, seed=seed, desc="mini diffusion UNet",
                      progress=progress, stop_after=stop_after)


def _split_dual(unet) -> None:
    """Undo :func:`nsdlib.diffusion.make_dual_guided` in place: each dual transformer is
    replaced by its image transformer, so the UNet saves in Versatile Diffusion's layout
    (the text transformers live on in the text UNet, the same module objects)."""
    names = [n for n, m in unet.named_modules() if isinstance(m, DualTransformer)]
    for name in names:
        parent, index = name.rsplit(".", 1)
        unet.get_submodule(parent)[int(index)] = unet.get_submodule(name).transformers[0]
    unet.register_to_config(dual_cross_attention=False)


# ---------------------------------------------------------------------------------- recipes
@dataclasses.dataclass(frozen=True)
class Recipe:
    """How much each mini model trains (``full`` for the book, ``quick`` for smoke tests)."""

    max_images: int | None
    vdvae: TrainSchedule
    clip: TrainSchedule
    vae: TrainSchedule
    unet: TrainSchedule
    eval_images: int
    eval_steps: int
    vdvae_kl: KLWarmup = KLWarmup()


#: Sized to about 52 minutes on 2 quiet cores (modelled in benchmarks/RESULTS.md, "Mini models"): the
#: VDVAE in one process, the CLIP then the diffusion autoencoder and UNet in another, one
#: thread each. The VDVAE warms up the KL of its blocks up to 8 x 8 (the first 30 of its 37)
#: from 0.1 to 1 over steps 1500-3500 and ends on the plain ELBO; batches of 8 learn more per
#: CPU second than batches of 16 at this budget. Models version 2 trained the VDVAE for 1,000
#: steps, the autoencoder for 400 and the UNet for 700, too few for any of them to draw the
#: objects (benchmarks/RESULTS.md also records a VDVAE variant that was tried and dropped).
RECIPES = {
    "full": Recipe(None, vdvae=TrainSchedule(4500, 8, 1e-3, warmup=100, checkpoint_every=500),
                   clip=TrainSchedule(300, 64, 1e-3, warmup=50),
                   vae=TrainSchedule(1200, 32, 2e-3, warmup=20, checkpoint_every=300),
                   unet=TrainSchedule(2500, 64, 1e-3, warmup=50, checkpoint_every=500),
                   eval_images=100, eval_steps=25,
                   vdvae_kl=KLWarmup(start=0.1, hold=1500, full=3500, max_resolution=8)),
    "quick": Recipe(32, vdvae=TrainSchedule(6, 8, 1e-3, warmup=2, checkpoint_every=3),
                    clip=TrainSchedule(6, 8, 1e-3, warmup=2, checkpoint_every=3),
                    vae=TrainSchedule(6, 8, 1e-3, warmup=2, checkpoint_every=3),
                    unet=TrainSchedule(6, 8, 1e-3, warmup=2, checkpoint_every=3),
                    eval_images=6, eval_steps=3,
                    vdvae_kl=KLWarmup(start=0.1, hold=2, full=4, max_resolution=8)),
}


def _world(root: Path) -> dict:
    man = read_manifest(root)
    if man is None:
        raise FileNotFoundError(f"{root} is not a mini-NSD root (no mini_nsd.json); generate it with "
                                f"`nsdlib mini generate --root {root}`")
    return {"generator_version": man["version"], "seed": man["seed"]}


def _manifest_path(folder: Path) -> Path:
    return Path(folder) / "manifest.json"


def read_models_manifest(folder: Path) -> dict | None:
    p = _manifest_path(folder)
    return json.loads(p.read_text()) if p.is_file() else None


def _fits(man: dict | None, world: dict, recipe: str) -> bool:
    return bool(man) and man.get("version") == MINI_MODELS_VERSION and man.get("world") == world \
        and man.get("recipe") == recipe and man.get("complete", False)


def train_models(root, workdir=None, quick: bool = False, device="auto", seed: int = 0, progress: bool = True,
                 parallel: bool | None = None) -> Path:
    """Train (or reuse) the small VDVAE, CLIP and diffusion models on the mini-NSD at ``root``.

    Parameters
    ----------
    root : path
        A mini-NSD root (``nsdlib mini generate``); its shared images are held out.
    workdir : path, optional
        Artifact root; models go to ``<workdir>/models/mini[-quick]``.
    quick : bool
        A tiny recipe for smoke tests (well under a minute).
    device : str
        Where to train (``"auto"``: CUDA when present).
    seed : int
        Seed of every initialisation and batch order.
    parallel : bool, optional
        Train the VDVAE in one process and the CLIP, then the diffusion model (which needs
        it), in another, one thread each. These small models gain little from a second
        thread, so on two cores the wall-clock time is about that of the longer process
        rather than the sum of both; the models are the same as a one-process run's with one
        thread. Default: on for the full recipe on a CPU with at least two cores.

    Returns
    -------
    Path of the folder holding ``vdvae.pt``, ``clip/``, ``diffusion/``, ``scene/`` (the scene
    probe and contrastive CNN of :mod:`nsdlib.mini.scene`) and ``manifest.json`` (which records
    the recipe, the training times and the held-out evaluation; ``"scene"``: the scene
    networks' training seconds and the probe's accuracy on the held-out test stimuli).
    """
    import time

    root = Path(root)
    world = _world(root)
    recipe_name = "quick" if quick else "full"
    recipe = RECIPES[recipe_name]
    out = models_folder(workdir, quick=quick)
    man = read_models_manifest(out)
    if _fits(man, world, recipe_name):
        if not scene_networks_present(out):  # models trained before the scene networks existed
            _write_manifest(out, {**man, "scene": _ensure_scene(root, out, quick, seed, progress)})
        return out
    dev = resolve_device(device)
    if dev.type != "cpu":
        torch.backends.cuda.matmul.allow_tf32 = True
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    start = time.perf_counter()
    if parallel is None:
        parallel = not quick and dev.type == "cpu" and (os.cpu_count() or 1) >= 2
    if parallel:
        times.update(_train_in_parallel(root, out, recipe_name, seed=seed, progress=progress))
    data = read_training_set(root, max_images=recipe.max_images, size=64)

    for part in _PARTS.values():  # what the parallel processes left (or everything, one thread pool)
        for key, ensure in part:
            t0 = time.perf_counter()
            ensure(data, out, recipe, seed, progress)
            times.setdefault(key, time.perf_counter() - t0)
    times["wall_s"] = time.perf_counter() - start

    scene = _ensure_scene(root, out, quick, seed, progress)
    evaluation = evaluate_models(root, out, n_images=recipe.eval_images, steps=recipe.eval_steps, seed=seed,
                                 progress=progress)
    for ckpt in out.glob("*.ckpt"):
        ckpt.unlink()
    seconds = {k: round(v, 1) for k, v in times.items()}
    _write_manifest(out, {"version": MINI_MODELS_VERSION, "world": world, "recipe": recipe_name, "seed": seed,
                          "n_training_images": int(len(data.ids)), "seconds": seconds,
                          "torch_threads": torch.get_num_threads(), "parallel": bool(parallel),
                          "evaluation": evaluation, "scene": scene, "complete": True})
    return out


def _ensure_scene(root: Path, out: Path, quick: bool, seed: int, progress: bool) -> dict:
    """The scene probe and contrastive CNN of :mod:`nsdlib.mini.scene` in ``out/scene/``, trained when
    missing; returns what they record (training seconds, the probe's held-out accuracy)."""
    if scene_networks_present(out):
        return load_scene_networks(out).info
    return train_scene_networks(root, out, seed=seed, progress=progress, recipe="quick" if quick else "full")


def _ensure_vdvae(data: TrainingSet, out: Path, recipe: Recipe, seed: int, progress: bool) -> None:
    if not (out / "vdvae.pt").exists():
        train_vdvae(resize(data.images64, 32, filter="torch-bilinear"), out / "vdvae.pt", recipe.vdvae, seed=seed,
                    kl_warmup=recipe.vdvae_kl, progress=progress)


def _ensure_clip(data: TrainingSet, out: Path, recipe: Recipe, seed: int, progress: bool) -> None:
    if not (out / "clip" / "config.json").exists():
        train_clip(data.images64, data.captions, out / "clip", recipe.clip, seed=seed, progress=progress)


def _ensure_diffusion(data: TrainingSet, out: Path, recipe: Recipe, seed: int, progress: bool) -> None:
    """The diffusion model (autoencoder, then UNet), conditioned by the trained CLIP in ``out``."""
    if not (out / "diffusion" / "image_unet").exists():
        _train_diffusion(data, ClipEmbedder.from_pretrained(out / "clip"), out, recipe, seed=seed, progress=progress)


#: The two processes of :func:`_train_in_parallel`, balanced by their measured CPU seconds.
_PARTS = {"vdvae": (("vdvae_s", _ensure_vdvae),),
          "clip+diffusion": (("clip_s", _ensure_clip), ("diffusion_s", _ensure_diffusion))}


def _train_part(part: str, root: str, out: str, recipe_name: str, seed: int, progress: bool) -> dict:
    """One process's share of :func:`_train_in_parallel`, with one thread; returns its seconds."""
    import time

    torch.set_num_threads(1)
    recipe, out = RECIPES[recipe_name], Path(out)
    data = read_training_set(root, max_images=recipe.max_images, size=64)
    times = {}
    for key, ensure in _PARTS[part]:
        t0 = time.perf_counter()
        ensure(data, out, recipe, seed, progress)
        times[key] = time.perf_counter() - t0
    return times


def _train_in_parallel(root: Path, out: Path, recipe_name: str, *, seed: int, progress: bool) -> dict:
    """Train the VDVAE in one process and CLIP then the diffusion model in another.

    Everything is written where the sequential steps of :func:`train_models` look for it
    (``vdvae.pt``, ``clip/``, ``diffusion/``), so they then find nothing left to train. The
    two processes are fresh Python interpreters (not forks of this one, whose thread pools
    may already be running); their progress bars go to standard error.
    """
    import subprocess
    import sys

    args = [str(root), str(out), recipe_name, int(seed), bool(progress)]
    procs = {}
    for part in _PARTS:
        code = ("import json, sys; from nsdlib.mini.zoo import _train_part; "
                f"json.dump(_train_part({part!r}, *json.loads(sys.argv[1])), sys.stdout)")
        procs[part] = subprocess.Popen([sys.executable, "-c", code, json.dumps(args)], stdout=subprocess.PIPE,
                                       text=True)
    times, failed = {}, []
    for part, proc in procs.items():
        stdout, _ = proc.communicate()
        if proc.returncode:
            failed.append(f"{part} (exit code {proc.returncode})")
        else:
            times.update(json.loads(stdout))
    if failed:
        raise RuntimeError(f"training the mini models in parallel failed for {', '.join(failed)}; its error is "
                           "printed above. Finished models are kept: run again to resume, or pass parallel=False")
    return times


#: The zoo's diffusion schedule: the cosine ("squaredcos_cap_v2", Nichol & Dhariwal 2021)
#: betas, v-prediction and "trailing" DDIM steps. Like the zero-terminal-SNR rescaling of
#: Versatile Diffusion's betas that models version 2 used (Lin et al. 2024), its last step
#: leaves no signal, so samples from pure noise must draw on their CLIP conditions (on
#: Versatile Diffusion's own schedule, recipe 1's UNet read the image's mean colour from the
#: noise instead: benchmarks/RESULTS.md). Unlike it, image-to-image keeps the first guess: at
#: the paper's strength 0.75 (37 of 50 steps re-run, from timestep 739) the noised latent
#: keeps sqrt(alpha_bar) = 0.39 of the first guess (signal-to-noise ratio 0.18), where the
#: rescaled schedule kept 0.19 (0.04) and Versatile Diffusion's keeps 0.27 (0.08, from
#: timestep 721); under version 2 stage 2's output did not depend on its first guess.
MINI_SCHEDULE = dict(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", rescale_betas_zero_snr=False,
                     timestep_spacing="trailing")


def mini_diffusion_components(cross_attention_dim: int, *, image_size: int = 64, seed: int = 0) -> dict:
    """Untrained components of the zoo's diffusion model, in Versatile Diffusion's classes.

    :func:`nsdlib.diffusion.random_components` with a KL autoencoder that downsamples by 8,
    as Versatile Diffusion's does, so 64 x 64 images become 4 x 8 x 8 latents and the UNets
    (cross-attention transformers at the same places, paired by ``make_dual_guided``) stay
    cheap enough to train on a CPU; the autoencoder's first level has 16 channels, which
    halves its cost at 64 x 64. The schedule is :data:`MINI_SCHEDULE`.
    """
    comps = random_components(cross_attention_dim=cross_attention_dim, image_size=image_size, seed=seed,
                              vae_channels=(16, 32, 64, 64), vae_groups=8)
    comps["scheduler_config"].update(MINI_SCHEDULE)
    return comps


def _train_diffusion(data: TrainingSet, embedder, out: Path, recipe: Recipe, *, seed: int, progress: bool) -> None:
    comps = mini_diffusion_components(embedder.dim, seed=seed)
    vae, image_unet, text_unet = comps["vae"], comps["image_unet"], comps["text_unet"]
    train_vae(data.images64, vae, recipe.vae, out / "vae.ckpt", seed=seed, progress=progress)
    vae.eval()
    with torch.no_grad():
        x = vae_input(data.images64, vae.config.sample_size)
        latents = torch.cat([vae.encode(x[i:i + 64]).latent_dist.mode() for i in range(0, len(x), 64)])
        latents = latents * vae.config.scaling_factor
    text = embedder.text(data.captions, progress=progress)
    vision = embedder.vision(data.images64, progress=progress)
    make_dual_guided(image_unet, text_unet)
    train_unet(latents, text, vision, embedder.unconditional(), image_unet, comps["scheduler_config"], recipe.unet,
               out / "unet.ckpt", seed=seed, progress=progress)
    _split_dual(image_unet)
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".diffusion.tmp-"))
    try:
        save_components({"vae": vae, "image_unet": image_unet, "text_unet": text_unet,
                         "scheduler_config": comps["scheduler_config"]}, tmp)
        if (out / "diffusion").exists():
            shutil.rmtree(out / "diffusion")
        tmp.rename(out / "diffusion")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------ evaluation
def evaluate_models(root, folder, *, n_images: int = 100, steps: int = 25, seed: int = 0,
                    progress: bool = True) -> dict:
    """Measure the mini models on mini-NSD's held-out (shared) images.

    Returns a dict with: the VDVAE's reconstruction SSIM (posterior means of every block,
    decoded) against the SSIM of shuffled pairs, and the SSIM when only the first 15
    blocks come from the posterior and the others from the prior (temperature 1, the
    first guess of stage 1 from perfectly predicted latents), with its shuffled pairs too;
    the small CLIP's top-1 caption retrieval among 10 candidates (chance 0.1); and the 2-way
    identification (small-CLIP vision features, chance 0.5) of diffusion samples generated
    from pure noise conditioned on the images' true text and vision embeddings.
    """
    folder = Path(folder)
    layout = NSDLayout(root, dataset="mini")
    ids = np.sort(read_expdesign(layout).sharedix - 1)[:n_images]
    images = read_stimuli(layout, ids, size=64, progress=False)
    captions = read_captions(layout, ids)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(ids))
    while len(ids) > 1 and np.any(shuffled == np.arange(len(ids))):
        shuffled = rng.permutation(len(ids))
    out: dict = {"n_images": int(len(ids))}

    vdvae = load_vdvae(folder / "vdvae.pt")
    small = resize(images, vdvae.config.image_size, filter="torch-bilinear")
    rec = reconstruct_images(vdvae, small, posterior="mean", seed=seed, progress=False)
    out["vdvae_ssim"] = float(np.mean(ssim(small, rec)))
    out["vdvae_ssim_shuffled"] = float(np.mean(ssim(small, rec[shuffled])))
    # what stage 1 can reach at best with 15 blocks: their posterior means, the rest drawn from the prior
    first = reconstruct_images(vdvae, small, 15, posterior="mean", seed=seed, progress=False)
    out["vdvae_ssim_15"] = float(np.mean(ssim(small, first)))
    out["vdvae_ssim_15_shuffled"] = float(np.mean(ssim(small, first[shuffled])))

    emb = ClipEmbedder.from_pretrained(folder / "clip")
    enc = emb.tokenizer([c[0] for c in captions], padding="max_length", max_length=77, truncation=True,
                        return_tensors="pt")
    with torch.no_grad():
        txt = emb.model.text_projection(emb.model.text_model(input_ids=enc["input_ids"],
                                                             attention_mask=enc["attention_mask"]).pooler_output)
    sim = (F.normalize(torch.from_numpy(_image_features(emb, images)), dim=-1) @ F.normalize(txt, dim=-1).T).numpy()
    hits = []
    for j in range(len(ids)):
        others = rng.choice(np.delete(np.arange(len(ids)), j), size=min(9, len(ids) - 1), replace=False)
        hits.append(bool(sim[j, j] > sim[j, others].max()))
    out["clip_top1_of_10"] = float(np.mean(hits))
    out["clip_chance"] = 1.0 / (1 + min(9, len(ids) - 1))

    vd = DualGuidedDiffusion.from_pretrained(folder / "diffusion")
    text, vision = emb.text(captions, progress=False), emb.vision(images, progress=False)
    u_text, u_vision = emb.unconditional()
    grey = np.full_like(images, 128)
    samples = vd.reconstruct(grey, text, vision, u_text, u_vision, strength=1.0, num_steps=steps,
                             guidance_scale=3.0, text_weight=0.4, seed=seed, progress=progress)

    out["diffusion_identification"] = float(np.mean(two_way_identification(_image_features(emb, images),
                                                                           _image_features(emb, samples))))
    out["diffusion_guidance_scale"] = 3.0
    out["diffusion_steps"] = steps
    return out


def _image_features(emb, images: np.ndarray) -> np.ndarray:
    """The small CLIP's projected class-token embedding of uint8 images (n, d)."""
    with torch.no_grad():
        pooled = emb.model.vision_model(pixel_values=emb.pixel_values(images)).pooler_output
        return emb.model.visual_projection(pooled).numpy()


# -------------------------------------------------------------------------------- loading
def models_folder(workdir=None, *, quick: bool = False) -> Path:
    """``<workdir>/models/mini`` (or ``mini-quick``): where :func:`train_models` writes."""
    base = Path(workdir) if workdir is not None else default_workdir()
    return base / "models" / ("mini-quick" if quick else "mini")


#: Trained weights shipped with nsdlib (the full recipe on the default mini-NSD, seed 0), if any.
SHIPPED = Path(__file__).resolve().parents[1] / "data" / "minimodels"


def locate(root, workdir=None, *, quick: bool = False) -> Path:
    """The folder of trained mini models for the mini-NSD at ``root``, or :class:`MiniModelsMissing`.

    Models trained in ``workdir`` come first; then the weights shipped with nsdlib
    (:data:`SHIPPED`), used only when they were trained, with this recipe, on a mini-NSD
    world of the same generator version and seed.
    """
    world = _world(Path(root))
    recipe = "quick" if quick else "full"
    for folder in (models_folder(workdir, quick=quick), SHIPPED):
        if _fits(read_models_manifest(folder), world, recipe):
            return folder
    folder = models_folder(workdir, quick=quick)
    raise MiniModelsMissing(f"no trained mini models for this mini-NSD in {folder}; train them with "
                            f"`nsdlib mini train-models --root {root}`" + (" --quick" if quick else ""))


def ensure_models(root, workdir=None, *, quick: bool = False, device="auto", seed: int = 0,
                  progress: bool = True) -> Path:
    """:func:`locate` the mini models, training them first if they are missing."""
    try:
        return locate(root, workdir, quick=quick)
    except MiniModelsMissing:
        return train_models(root, workdir=workdir, quick=quick, device=device, seed=seed, progress=progress)
