"""The mini model zoo as a pipeline step: train or reuse, summarise, sample (the appendix, chapter 00).

Not to be confused with the run parameter ``models=`` ("mini" or "pretrained"): this module
makes and measures the mini models that ``models="mini"`` uses. The figure is drawn by
``nsdlib.report.figures.zoo_figure``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..clip import ClipEmbedder
from ..config import RunConfig
from ..diffusion import DualGuidedDiffusion
from ..images import resize
from ..mini.zoo import RECIPES, ensure_models, evaluate_models, read_models_manifest
from ..nsd import NSDLayout, read_captions, read_expdesign, read_stimuli
from ..vdvae import load_vdvae, reconstruct_images
from . import context
from .dataset import ensure_mini_world, mini_world_config

__all__ = ["mini_models", "mini_world_config", "zoo_evaluation", "zoo_samples", "zoo_summary"]


def mini_models(cfg: RunConfig, progress: bool = True) -> Path:
    """The folder of the mini models for this run, trained first if necessary.

    Looks for models trained in ``<workdir>/models/``, then for the weights shipped with
    nsdlib (used only when they were made for this very mini-NSD world), and otherwise trains
    them (:func:`nsdlib.mini.zoo.train_models`: about 15 minutes on 2 CPU cores, seconds
    with ``quick=True``). The run's context is dropped, so the next step finds these models.
    """
    world = mini_world_config(cfg)
    ensure_mini_world(world, progress)
    folder = ensure_models(world.nsd_root, world.workdir, quick=world.quick, device=cfg.device,
                                    seed=0, progress=progress)
    context.forget()
    return folder


def zoo_evaluation(cfg: RunConfig, folder: Path) -> dict:
    """:func:`nsdlib.mini.zoo.evaluate_models` on this run's mini-NSD, cached in the run's store."""
    world = mini_world_config(cfg)
    recipe = RECIPES["quick" if cfg.quick else "full"]
    man = read_models_manifest(folder)
    params = {"v": 2, "models": str(folder), "trained": {k: man.get(k) for k in ("version", "world", "recipe", "seed")},
              "root": str(world.nsd_root), "n_images": recipe.eval_images, "steps": recipe.eval_steps}
    return context.get(cfg).store.json("mini_models_evaluation", params, lambda: evaluate_models(
        world.nsd_root, folder, n_images=recipe.eval_images, steps=recipe.eval_steps, seed=0, progress=False))


def zoo_summary(cfg: RunConfig, folder: Path) -> dict:
    """The zoo's held-out evaluation, measured by this run, as a table and a sentence."""
    import pandas as pd

    man = read_models_manifest(folder)
    ev = zoo_evaluation(cfg, folder)
    rows = [
        ("small VDVAE", "reconstruction SSIM (32 × 32, 2-D)", ev["vdvae_ssim"], ev["vdvae_ssim_shuffled"],
         "shuffled pairs"),
        ("small VDVAE", "SSIM, first 15 blocks from the posterior, the rest from the prior",
         ev["vdvae_ssim_15"], ev["vdvae_ssim_15_shuffled"], "shuffled pairs"),
        ("small CLIP", "own caption ranked first among 10", ev["clip_top1_of_10"], ev["clip_chance"], "chance"),
        ("small diffusion", "2-way identification of samples (small-CLIP features)",
         ev["diffusion_identification"], 0.5, "chance"),
    ]
    probe = man.get("scene", {}).get("validation", {})
    rows += [("scene probe", f"main object's {a} read from the held-out test stimuli (recorded at training)",
              v["accuracy"], v["chance"], "permutation chance") for a, v in probe.items()]
    table = pd.DataFrame(rows, columns=["model", "measure", "measured", "baseline", "baseline is"])
    table = table.style.format({"measured": "{:.3f}", "baseline": "{:.3f}"}).hide(axis="index")
    secs = man["seconds"]
    where = ("the weights shipped with nsdlib, trained by `nsdlib mini train-models` on a 2-core CPU"
             if man.get("shipped") else f"the models trained in {folder}")
    note = (f"Measured by this run on {ev['n_images']} held-out images of {mini_world_config(cfg).nsd_root}, "
            f"for {where} (recipe '{man['recipe']}', {man['n_training_images']} training images, seed "
            f"{man['seed']}; diffusion samples: {ev['diffusion_steps']} DDIM steps, guidance "
            f"{ev['diffusion_guidance_scale']}). Training took {secs['vdvae_s']:.0f} s (VDVAE), "
            f"{secs['clip_s']:.0f} s (CLIP) and {secs['diffusion_s']:.0f} s (diffusion autoencoder and UNet)")
    if "wall_s" in secs:
        how = ", in two processes side by side" if man.get("parallel") else ""
        note += f"; {secs['wall_s']:.0f} s in all, wall-clock{how}"
    if "scene" in man:
        note += (f"; the scene probe and the contrastive CNN (the scene score and the offline metric columns) "
                 f"{man['scene']['probe_s'] + man['scene']['contrastive_s']:.0f} s")
    note += "."
    return {"table": table, "note": note, "manifest": man}


def zoo_samples(cfg: RunConfig, folder: Path, n_images: int = 6, steps: int = 25) -> dict:
    """Held-out mini-NSD stimuli, their small-VDVAE reconstructions and diffusion samples from true embeddings.

    Parameters
    ----------
    folder : path
        The mini models (:func:`mini_models`).
    n_images : int
        The first ``n_images`` shared (test) images.
    steps : int
        DDIM steps of the diffusion samples (guidance 3.0, seeded by ``cfg.seed``).

    Returns
    -------
    dict
        ``"stimuli"`` (uint8, shape (n_images, 64, 64, 3)), ``"vdvae"`` and ``"diffusion"``
        (uint8 images), ``"captions"`` (five per image), for ``nsdlib.report.figures.zoo_figure``.
    """
    world = mini_world_config(cfg)
    layout = NSDLayout(world.nsd_root, dataset="mini")
    ids = np.sort(read_expdesign(layout).sharedix - 1)[:n_images]
    images = read_stimuli(layout, ids, size=64, progress=False)
    captions = read_captions(layout, ids)
    vdvae = load_vdvae(Path(folder) / "vdvae.pt")
    small = resize(images, vdvae.config.image_size, filter="torch-bilinear")
    rec = reconstruct_images(vdvae, small, posterior="mean", progress=False)
    emb = ClipEmbedder.from_pretrained(Path(folder) / "clip")
    vd = DualGuidedDiffusion.from_pretrained(Path(folder) / "diffusion")
    u_text, u_vision = emb.unconditional()
    samples = vd.reconstruct(np.full_like(images, 128), emb.text(captions, progress=False),
                             emb.vision(images, progress=False), u_text, u_vision, strength=1.0, num_steps=steps,
                             guidance_scale=3.0, seed=cfg.seed, indices=ids, progress=False)
    return {"stimuli": images, "vdvae": rec, "diffusion": samples, "captions": captions}
