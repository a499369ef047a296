"""Stage 2 speed: seconds per image of nsdlib's dual-guided image-to-image, against diffusers.

Workload: the mini size (64 x 64 images, latents 16 x 16, CLIP width 64) with the small
randomly initialised components that stand in for the mini model zoo's (same classes as
Versatile Diffusion: AutoencoderKL, UNet2DConditionModel, UNetFlatConditionModel's
transformers, DualTransformer2DModel mixing). Settings of the paper: strength 0.75 of 50
DDIM steps (37 run), guidance 7.5, text weight 0.4.

Peers, timed in the same process on the same components:

- **diffusers' VersatileDiffusionDualGuidedPipeline**, run text-to-image for 37 steps (it has
  no image-to-image strength), from captions and images that it encodes itself with the
  same small CLIP. It does the same UNet work (37 guided steps, batch 2n) without the VAE
  encoding of a first guess. In diffusers 0.42 its own conversion to dual attention fails
  inside today's UNet blocks (huggingface/diffusers#13651), so it is handed the image UNet
  already converted by ``nsdlib.diffusion.make_dual_guided``; everything else is its code.
- **the VAE round trip** alone (what strength 0 costs): the floor of any stage 2.

Usage::

    .venv/bin/python benchmarks/bench_diffusion.py [--images 4] [--repeats 3] [--threads 1] [--device cpu]

Prints a table and one line to paste into benchmarks/RESULTS.md. Timings are the best of
``--repeats`` runs (a busy shared machine only ever slows a run down).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import time

import numpy as np
import torch


def _best(fn, repeats: int) -> tuple[float, float]:
    """Best wall-clock and best process CPU time of ``repeats`` runs, in seconds."""
    wall = cpu = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return wall, cpu


def _diffusers_pipeline(emb, comps, scheduler, device):
    """diffusers' dual-guided pipeline on the same components (UNet pre-converted, see module doc)."""
    import tempfile

    from diffusers.pipelines.deprecated.versatile_diffusion import VersatileDiffusionDualGuidedPipeline
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection
    from transformers.utils import logging as hf_logging

    from nsdlib.diffusion import make_dual_guided

    hf_logging.set_verbosity_error()  # the text and vision classes each skip the other tower's weights
    with tempfile.TemporaryDirectory() as tmp:
        emb.save_pretrained(tmp)
        text_encoder = CLIPTextModelWithProjection.from_pretrained(tmp, local_files_only=True)
        image_encoder = CLIPVisionModelWithProjection.from_pretrained(tmp, local_files_only=True)
    unet = make_dual_guided(comps["image_unet"], comps["text_unet"])
    pipe = VersatileDiffusionDualGuidedPipeline(
        tokenizer=emb.tokenizer, image_feature_extractor=emb.image_processor, text_encoder=text_encoder,
        image_encoder=image_encoder, image_unet=unet, text_unet=comps["text_unet"], vae=comps["vae"],
        scheduler=scheduler)
    pipe.remove_unused_weights()
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def main(argv=None) -> None:
    from PIL import Image

    from nsdlib.clip import random_clip
    from nsdlib.diffusion import DualGuidedDiffusion, random_components

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=64, help="image side (mini: 64)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n, steps, strength, guidance, text_weight = args.images, 50, 0.75, 7.5, 0.4
    n_run = int(steps * strength)

    emb = random_clip(image_size=64, device=device)
    comps = random_components(cross_attention_dim=emb.dim, image_size=args.size)
    ours = DualGuidedDiffusion(**copy.deepcopy(comps), device=device, unet_dtype=torch.float32)
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # mini first guesses are 32 px
    stimuli = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    captions = [f"a red circle and {i + 1} blue squares" for i in range(n)]
    text = emb.text(captions, progress=False)
    vision = emb.vision(stimuli, progress=False)
    u_text, u_vision = emb.unconditional()

    def run_ours():
        ours.reconstruct(first, text, vision, u_text, u_vision, strength=strength, num_steps=steps,
                         guidance_scale=guidance, text_weight=text_weight, batch_size=n, progress=False)

    def run_ours_one_by_one():
        ours.reconstruct(first, text, vision, u_text, u_vision, strength=strength, num_steps=steps,
                         guidance_scale=guidance, text_weight=text_weight, batch_size=1, progress=False)

    def run_vae():
        ours.vae_round_trip(first)

    pipe = _diffusers_pipeline(emb, copy.deepcopy(comps), ours.scheduler(), device)
    pil = [Image.fromarray(s) for s in stimuli]

    def run_peer():
        gens = [torch.Generator().manual_seed(i) for i in range(n)]
        with torch.no_grad():
            pipe(prompt=captions, image=pil, text_to_image_strength=text_weight, height=args.size, width=args.size,
                 num_inference_steps=n_run, guidance_scale=guidance, generator=gens, output_type="np")

    run_ours()  # warm-up (first calls allocate)
    run_peer()
    t = {"nsdlib (batch of all)": _best(run_ours, args.repeats),
         "nsdlib (one image per call)": _best(run_ours_one_by_one, args.repeats),
         "diffusers VersatileDiffusionDualGuidedPipeline": _best(run_peer, args.repeats),
         "VAE round trip only": _best(run_vae, args.repeats)}
    peer = t["diffusers VersatileDiffusionDualGuidedPipeline"]
    ours_t = t["nsdlib (batch of all)"]
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"{n} images, {args.size} px, {n_run} of {steps} DDIM steps, guidance {guidance}, device {device}, "
          f"{args.threads} thread(s); best of {args.repeats}; load average {load}")
    print(f"{'':50s} {'wall s/img':>10s} {'CPU s/img':>10s} {'wall vs diffusers':>18s}")
    for k, (w, c) in t.items():
        print(f"{k:50s} {w / n:10.3f} {c / n:10.3f} {w / peer[0]:17.2f}x")
    print(f"\nRESULTS: {dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, load {load}, "
          f"{device}, {args.threads} thread(s), {n} images at {args.size} px: nsdlib {ours_t[0] / n:.3f} s/image "
          f"wall ({ours_t[1] / n:.3f} CPU), diffusers pipeline {peer[0] / n:.3f} wall ({peer[1] / n:.3f} CPU), "
          f"ratio {ours_t[0] / peer[0]:.2f}; one image per call {t['nsdlib (one image per call)'][0] / n:.3f}; "
          f"VAE round trip {t['VAE round trip only'][0] / n:.4f}")

if __name__ == "__main__":
    main()
