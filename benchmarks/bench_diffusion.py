"""Stage 2 speed: seconds per image of nsdlib's dual-guided image-to-image, against diffusers.

Workload: the mini size (64 x 64 images, CLIP width 64) with the mini model zoo's diffusion
architecture, randomly initialised (:func:`nsdlib.mini.zoo.mini_diffusion_components`: the f8
autoencoder, so 8 x 8 latents, and the zoo's schedule; same classes as Versatile Diffusion:
AutoencoderKL, UNet2DConditionModel, UNetFlatConditionModel's transformers,
DualTransformer2DModel mixing); the cost of a step does not depend on the weights. Settings of
the paper: strength 0.75 of 50 DDIM steps (37 run), guidance 7.5, text weight 0.4.

Peers, timed in the same process on the same components:

- **diffusers' VersatileDiffusionDualGuidedPipeline**, run text-to-image for 37 steps (it has
  no image-to-image strength), from captions and images that it encodes itself with the
  same small CLIP. It does the same UNet work (37 guided steps, batch 2n) without the VAE
  encoding of a first guess. In diffusers 0.42 its own conversion to dual attention fails
  inside today's UNet blocks (huggingface/diffusers#13651), so it is handed the image UNet
  already converted by ``nsdlib.diffusion.make_dual_guided``; everything else is its code.
- **the VAE round trip** alone (what strength 0 costs): the floor of any stage 2.

Under the benchmark protocol (``_protocol.py``): one thread, every timing repeated ``--repeats``
times (at least 3) with the peer and ours interleaved, the median seconds per image and the
median ratio (diffusers / ours, so above 1 means nsdlib is faster) with its range, the load
before and after; wall-clock and process CPU time (the steadier figure on a shared machine).
Writes ``benchmarks/results/diffusion.json``; ``make bench-report`` puts its table into RESULTS.md.

Usage::

    .venv/bin/python benchmarks/bench_diffusion.py [--images 4] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from _protocol import Session, cpu_stats, cpu_timed

LABELS = {"peer": "diffusers `VersatileDiffusionDualGuidedPipeline` (peer)",
          "batch": "nsdlib `DualGuidedDiffusion.reconstruct`, all images per UNet call",
          "one": "nsdlib, one image per UNet call",
          "vae": "nsdlib, VAE round trip only (strength 0)"}


def per_image(stats: dict, n: int) -> dict:
    """A protocol spread of seconds for ``n`` images as seconds per image (``n`` repeats kept)."""
    return {k: (v / n if k != "n" else v) for k, v in stats.items()}


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


def main(argv=None) -> dict:
    from PIL import Image

    from nsdlib.clip import random_clip
    from nsdlib.diffusion import DualGuidedDiffusion
    from nsdlib.mini.zoo import mini_diffusion_components

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=64, help="image side (mini: 64)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    run = Session("diffusion", "benchmarks/bench_diffusion.py", argv=argv, versions=("diffusers", "transformers"))
    device = torch.device(args.device)
    n, steps, strength, guidance, text_weight = args.images, 50, 0.75, 7.5, 0.4
    n_run = int(steps * strength)

    emb = random_clip(image_size=64, device=device)
    comps = mini_diffusion_components(emb.dim, image_size=args.size)
    ours = DualGuidedDiffusion(**copy.deepcopy(comps), device=device, unet_dtype=torch.float32)
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # mini first guesses are 32 px
    stimuli = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    captions = [f"a red circle and {i + 1} blue squares" for i in range(n)]
    text = emb.text(captions, progress=False)
    vision = emb.vision(stimuli, progress=False)
    u_text, u_vision = emb.unconditional()

    def run_ours(batch_size):
        return lambda: ours.reconstruct(first, text, vision, u_text, u_vision, strength=strength, num_steps=steps,
                                        guidance_scale=guidance, text_weight=text_weight, batch_size=batch_size,
                                        progress=False)

    pipe = _diffusers_pipeline(emb, copy.deepcopy(comps), ours.scheduler(), device)
    pil = [Image.fromarray(s) for s in stimuli]

    def run_peer():
        gens = [torch.Generator().manual_seed(i) for i in range(n)]
        with torch.no_grad():
            pipe(prompt=captions, image=pil, text_to_image_strength=text_weight, height=args.size, width=args.size,
                 num_inference_steps=n_run, guidance_scale=guidance, generator=gens, output_type="np")

    cpu: dict = {}
    entries = cpu_timed([(LABELS["peer"], run_peer), (LABELS["batch"], run_ours(n)), (LABELS["one"], run_ours(1)),
                         (LABELS["vae"], lambda: ours.vae_round_trip(first))], cpu)
    stats, _ = run.compare(entries[0], entries[1:], repeats=args.repeats, warmup=True)
    cstats = cpu_stats(cpu, LABELS["peer"], warmup=True)
    rows = [[LABELS[k], per_image(stats[LABELS[k]]["seconds"], n), stats[LABELS[k]].get("ratio"),
             per_image(cstats[LABELS[k]]["seconds"], n), cstats[LABELS[k]].get("ratio")]
            for k in ("peer", "batch", "one", "vae")]
    run.values.update(images=n, size=args.size, steps_run=n_run, device=str(device))
    run.table("stage2", f"Stage 2 at the mini size: {n} images of {args.size} px, {n_run} of {steps} DDIM steps, "
              f"guidance {guidance}, text weight {text_weight}, device {device} (median and range over the repeats; "
              "ratios > 1: faster than the peer)",
              ["what", "wall s / image", "diffusers / this, wall", "CPU s / image", "diffusers / this, CPU"],
              rows, ["{}", "{:.3f}", "{:.2f}×", "{:.3f}", "{:.2f}×"])
    for r in rows:
        print(r)
    run.write(args.out)
    return {"stats": stats, "rows": rows}


if __name__ == "__main__":
    main()
