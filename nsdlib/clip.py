"""CLIP token embeddings normalised the way Versatile Diffusion consumes them.

Stage 2 of the decoder predicts two CLIP embeddings per image and hands them to Versatile
Diffusion as cross-attention contexts:

- **text**: every caption is padded to 77 tokens; the text projection is applied to every
  token of the last hidden state; all 77 tokens are divided by the norm of the projected
  end-of-text token; the image's captions are averaged → ``(77, d)``;
- **vision**: the vision tower's ``post_layernorm`` and the visual projection are applied to
  all 257 tokens (class token and 16 × 16 patches for ViT-L/14 at 224 px), and all tokens
  are divided by the norm of the projected class token → ``(257, d)``.

``d`` is 768 for CLIP ViT-L/14 and whatever the projection size is for a small model.

Images enter as uint8 0–255 arrays, or as floats already in 0–1. Both are turned into 0–1
floats here and the image processor is always called with ``do_rescale=False``, so a 0–1
image is never divided by 255 a second time (the processor's default would do exactly
that, silently, and feed CLIP an almost black image).

Predicted embeddings are scored against true ones by :mod:`nsdlib.metrics`
(:func:`~nsdlib.metrics.per_token_correlation`, :func:`~nsdlib.metrics.two_way_identification`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import assets
from .images import check_images, to_unit_float

__all__ = [
    "N_TEXT_TOKENS",
    "N_VISION_TOKENS",
    "ClipEmbedder",
    "byte_level_tokenizer",
    "random_clip",
]

N_TEXT_TOKENS = 77
N_VISION_TOKENS = 257


def _tqdm(iterable=None, **kw):
    from tqdm.auto import tqdm

    return tqdm(iterable, **kw)


def byte_level_tokenizer():
    """A CLIP tokenizer whose vocabulary is the 256 bytes, with and without ``</w>``.

    The same class, normaliser, pre-tokeniser and special tokens as OpenAI's CLIP tokenizer,
    but no BPE merges: every word is spelled out byte by byte. Used by the randomly
    initialised stand-in model (:func:`random_clip`); ids 512 and 513 are
    ``<|startoftext|>`` and ``<|endoftext|>`` (the end-of-text token has the highest id, as
    in the real vocabulary).
    """
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    vocab.update({ch + "</w>": len(alphabet) + i for i, ch in enumerate(alphabet)})
    vocab["<|startoftext|>"] = 2 * len(alphabet)
    vocab["<|endoftext|>"] = 2 * len(alphabet) + 1
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=N_TEXT_TOKENS)


def random_clip(*, projection_dim: int = 64, hidden_size: int = 64, n_layers: int = 2, n_heads: int = 2,
                image_size: int = 64, patch_size: int = 4, seed: int = 0, device="cpu") -> ClipEmbedder:
    """A randomly initialised small CLIP with the real model's classes and token counts.

    77 text positions and ``(image_size / patch_size)² + 1`` vision tokens (257 with the
    defaults: 64 px images, 4 px patches). It stands in for the mini model zoo's trained
    CLIP until that exists; its embeddings carry no meaning beyond being a deterministic
    function of the input.

    Parameters
    ----------
    projection_dim : int
        ``d``, the width of the projected embeddings.
    hidden_size, n_layers, n_heads : int
        Width, depth and heads of both towers.
    image_size, patch_size : int
        Vision input size and patch size, in pixels.
    seed : int
        Seed of the weight initialisation.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    tok = byte_level_tokenizer()
    tower = dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=n_layers,
                 num_attention_heads=n_heads, projection_dim=projection_dim)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), max_position_embeddings=N_TEXT_TOKENS, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **tower),
        vision_config=dict(image_size=image_size, patch_size=patch_size, **tower),
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                   crop_size={"height": image_size, "width": image_size})
    return ClipEmbedder(model, tok, processor, device=device)


class ClipEmbedder:
    """Text and vision token embeddings of a transformers CLIP model.

    Parameters
    ----------
    model : transformers.CLIPModel
        Any CLIP model with ``text_model``, ``text_projection``, ``vision_model`` (with
        ``post_layernorm``) and ``visual_projection``.
    tokenizer : transformers tokenizer
        Its tokenizer (``CLIPTokenizer`` for OpenAI's model); its end-of-text token marks the
        token whose norm normalises a caption.
    image_processor : transformers.CLIPImageProcessor
        Its image processor (resize, centre crop, normalise); always called on 0–1 floats
        with ``do_rescale=False``.
    device : str or torch.device
        Where the model runs.
    batch_size : int
        Images per forward pass (text: all captions of that many images).
    dtype : torch.dtype, optional
        Model precision (default float32; float16 is sensible on CUDA only).

    Examples
    --------
    >>> emb = random_clip()
    >>> emb.text([["a red circle", "a circle"]]).shape
    (1, 77, 64)
    """

    def __init__(self, model, tokenizer, image_processor, *, device="cpu", batch_size: int = 16, dtype=None):
        import torch

        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self.model = model.to(self.device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.batch_size = int(batch_size)
        n_pos = model.config.text_config.max_position_embeddings
        if n_pos != N_TEXT_TOKENS:
            raise ValueError(f"the CLIP text tower must have {N_TEXT_TOKENS} positions (Versatile Diffusion's "
                             f"condition length); this model has {n_pos}")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no end-of-text token; CLIP text embeddings are normalised by it")

    # ------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike | None = None, *, device="cpu", **kw) -> ClipEmbedder:
        """Load a CLIP folder saved with ``save_pretrained`` (no network access).

        Parameters
        ----------
        path : path, optional
            A folder with the model (``config.json``, safetensors weights), the tokenizer and
            ``preprocessor_config.json``. Default: the ``"clip"`` asset
            (``openai/clip-vit-large-patch14``), or :class:`~nsdlib.assets.MissingAssetError`
            naming ``nsdlib fetch clip`` when it is not on this machine.
        """
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        if path is None:
            path = assets.require("clip")
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no CLIP model at {path}: expected a folder with config.json, weights, "
                                    "tokenizer files and preprocessor_config.json")
        model = CLIPModel.from_pretrained(path, local_files_only=True, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
        return cls(model, tokenizer, processor, device=device, **kw)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write model, tokenizer and image processor so :meth:`from_pretrained` reads them back."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        return path

    # ---------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        """``d``, the width of the projected embeddings."""
        return int(self.model.text_projection.out_features)

    @property
    def n_vision_tokens(self) -> int:
        cfg = self.model.config.vision_config
        return (cfg.image_size // cfg.patch_size) ** 2 + 1

    @property
    def image_size(self) -> int:
        """Side of the square image the vision tower sees, in pixels."""
        return int(self.model.config.vision_config.image_size)

    # ---------------------------------------------------------------- text
    def _encode_captions(self, captions: list[str]):
        import torch

        enc = self.tokenizer(captions, padding="max_length", max_length=N_TEXT_TOKENS, truncation=True,
                             return_tensors="pt")
        ids = enc.input_ids.to(self.device)
        is_eot = ids == self.tokenizer.eos_token_id
        if not bool(is_eot.any(dim=1).all()):
            raise ValueError("a tokenised caption has no end-of-text token")
        eot = is_eot.int().argmax(dim=1)  # first end-of-text token (padding repeats it)
        with torch.no_grad():
            hidden = self.model.text_model(input_ids=ids).last_hidden_state
            tokens = self.model.text_projection(hidden)
            norm = tokens[torch.arange(len(ids), device=self.device), eot].norm(dim=-1)
            return (tokens / norm[:, None, None]).float()

    def text(self, captions, *, progress: bool = True) -> np.ndarray:
        """Text embeddings of images, averaged over each image's captions.

        Parameters
        ----------
        captions : list of list of str, or list of str
            One list of captions per image (any number, at least one), or one caption per
            image.
        progress : bool
            Show a progress bar.

        Returns
        -------
        ndarray of shape (n_images, 77, d), float32
            Each caption's tokens divided by the norm of its projected end-of-text token,
            then averaged over the image's captions.
        """
        import torch

        per_image = [[c] if isinstance(c, str) else list(c) for c in captions]
        for i, caps in enumerate(per_image):
            if not caps or not all(isinstance(c, str) for c in caps):
                raise ValueError(f"image {i} has no captions or a caption that is not a string: {caps!r}")
        out = np.empty((len(per_image), N_TEXT_TOKENS, self.dim), np.float32)
        starts = range(0, len(per_image), self.batch_size)
        for s in _tqdm(starts, desc="CLIP text", unit="batch", disable=not progress or len(starts) < 2):
            chunk = per_image[s:s + self.batch_size]
            flat = [c for caps in chunk for c in caps]
            owner = torch.tensor([i for i, caps in enumerate(chunk) for _ in caps], device=self.device)
            tokens = self._encode_captions(flat)
            summed = torch.zeros((len(chunk), *tokens.shape[1:]), device=self.device).index_add_(0, owner, tokens)
            counts = torch.bincount(owner, minlength=len(chunk)).float()
            out[s:s + len(chunk)] = (summed / counts[:, None, None]).cpu().numpy()
        return out

    # -------------------------------------------------------------- vision
    def pixel_values(self, images: np.ndarray):
        """The vision tower's input: resized, centre-cropped, normalised.

        Parameters
        ----------
        images : ndarray of shape (n, H, W, 3)
            uint8 in 0–255, or floating point already in 0–1 (never rescaled again).

        Returns
        -------
        torch.Tensor of shape (n, 3, S, S), float32, on the CPU
        """
        import torch

        unit = to_unit_float(images)
        batch = torch.from_numpy(unit).permute(0, 3, 1, 2)
        return self.image_processor(images=batch, do_rescale=False, return_tensors="pt").pixel_values

    def vision(self, images: np.ndarray, *, progress: bool = True) -> np.ndarray:
        """Vision embeddings of every token.

        Parameters
        ----------
        images : ndarray of shape (n, H, W, 3)
            uint8 in 0–255, or floating point in 0–1.
        progress : bool
            Show a progress bar.

        Returns
        -------
        ndarray of shape (n, n_vision_tokens, d), float32
            ``visual_projection(post_layernorm(hidden))`` of every token, divided by the norm
            of the projected class token (token 0).
        """
        import torch

        images = np.asarray(check_images(images, uint8=False))
        out = np.empty((len(images), self.n_vision_tokens, self.dim), np.float32)
        starts = range(0, len(images), self.batch_size)
        for s in _tqdm(starts, desc="CLIP vision", unit="batch", disable=not progress or len(starts) < 2):
            pv = self.pixel_values(images[s:s + self.batch_size]).to(self.device, self.dtype)
            with torch.no_grad():
                hidden = self.model.vision_model(pixel_values=pv).last_hidden_state
                tokens = self.model.visual_projection(self.model.vision_model.post_layernorm(hidden))
                tokens = tokens / tokens[:, :1].norm(dim=-1, keepdim=True)
            out[s:s + len(pv)] = tokens.float().cpu().numpy()
        return out

    # -------------------------------------------------------- unconditional
    def unconditional(self) -> tuple[np.ndarray, np.ndarray]:
        """The unconditional contexts of classifier-free guidance.

        Returns
        -------
        text : ndarray of shape (77, d)
            The embedding of the empty caption ``""``.
        vision : ndarray of shape (n_vision_tokens, d)
            The embedding of a uniform grey image (0.5 in 0–1 units).
        """
        grey = np.full((1, self.image_size, self.image_size, 3), 0.5, np.float32)
        return self.text([[""]], progress=False)[0], self.vision(grey, progress=False)[0]
