"""The mini model zoo: the cost of one training step of each model, the full recipe modelled from it,
and the shipped models' held-out quality.

``nsdlib mini train-models`` (recipe "full") takes about 45-90 minutes on 2 cores, too long for a
benchmark's default run. This script measures, under the benchmark protocol (``_protocol.py``:
one thread, ``--repeats`` repeats, median and range, load recorded), what one optimiser step of
each model costs at the recipe's batch size, and models the recipe from it:

- each model's training function of :mod:`nsdlib.mini.zoo` / :mod:`nsdlib.mini.scene` is run
  for ``k`` and for ``2 k`` steps (``stop_after`` / the recipe's step count), each from a fresh
  model, the two orders alternating over the repeats; a step's cost is their difference over
  ``k`` (what both runs share, building the model and preparing its data, cancels);
- on random data of the recipe's shapes (images 64 px, the VDVAE's 32 px, latents 4 x 8 x 8,
  the shipped small CLIP's text and vision embeddings of them): the cost of a step does not
  depend on what the pixels show;
- both clocks are recorded; the model uses process CPU seconds (one thread, so a step's wall
  clock on a quiet core), which hold when other work shares the machine;
- the full recipe is modelled as its steps times the step's cost (what it leaves out: encoding
  the training latents and CLIP embeddings once, checkpoints, the evaluation), beside the
  seconds the shipped models' training recorded (their manifest; two processes of one thread side
  by side, on a machine shared with other work) as a check of the model.

There is no peer: nothing else trains these models. The held-out quality table is generated
from the shipped models' manifest (``nsdlib/data/minimodels/manifest.json``, written by the
training run that made them; read, never changed).

Writes ``benchmarks/results/minimodels.json``.
Run: ``.venv/bin/python benchmarks/bench_minimodels.py [--repeats 3] [--images 256]``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _protocol import Session, spread

from nsdlib.clip import ClipEmbedder
from nsdlib.diffusion import make_dual_guided
from nsdlib.images import resize, to_tensor
from nsdlib.mini import scene, zoo

#: Steps of the two runs (k and 2 k) per model: enough for a few seconds of work each.
K_STEPS = {"vdvae": 4, "clip": 2, "vae": 2, "unet": 2, "probe": 4, "contrastive": 2}


def step_cost(times_k, times_2k, k: int) -> dict:
    """The protocol's spread of ``(t(2 k) - t(k)) / k`` over paired repeats: seconds per step."""
    if len(times_k) != len(times_2k):
        raise ValueError(f"step costs need paired runs; found {len(times_k)} and {len(times_2k)}")
    return spread([(b - a) / k for a, b in zip(times_k, times_2k)])


def time_steps(make_run, k: int, repeats: int) -> dict:
    """Seconds per step of ``make_run(steps)()`` (setup untimed), ``k`` and ``2 k`` steps alternating:
    ``{"wall": spread, "cpu": spread}`` (process CPU seconds: the figure that holds on a shared machine)."""
    wall = {k: [], 2 * k: []}
    cpu = {k: [], 2 * k: []}
    for r in range(repeats):
        for steps in ((k, 2 * k) if r % 2 == 0 else (2 * k, k)):
            call = make_run(steps)
            t0, c0 = time.perf_counter(), time.process_time()
            call()
            wall[steps].append(time.perf_counter() - t0)
            cpu[steps].append(time.process_time() - c0)
    return {"wall": step_cost(wall[k], wall[2 * k], k), "cpu": step_cost(cpu[k], cpu[2 * k], k)}


def modelled_rows(costs: dict, recipe, scene_recipe, shipped: dict) -> list:
    """Rows (model, steps x batch, CPU s per step, modelled s, shipped s, modelled / shipped) and the
    whole command as the parallel training runs it: max(VDVAE, CLIP + diffusion) + scene networks.
    ``costs[model]`` is a spread of a step's process CPU seconds (one thread: its wall clock on a quiet core)."""
    med = {m: c["median"] for m, c in costs.items()}
    plan = [("small VDVAE", recipe.vdvae, ["vdvae"], shipped["seconds"]["vdvae_s"]),
            ("small CLIP", recipe.clip, ["clip"], shipped["seconds"]["clip_s"]),
            ("f8 autoencoder", recipe.vae, ["vae"], None),
            ("dual-guided UNet", recipe.unet, ["unet"], None),
            ("diffusion (autoencoder + UNet)", None, ["vae", "unet"], shipped["seconds"]["diffusion_s"]),
            ("scene probe", (scene_recipe.probe_steps, scene_recipe.batch_size), ["probe"],
             shipped["scene"]["probe_s"]),
            ("contrastive CNN", (scene_recipe.contrastive_steps, scene_recipe.batch_size), ["contrastive"],
             shipped["scene"]["contrastive_s"])]
    steps = {"vdvae": recipe.vdvae.steps, "clip": recipe.clip.steps, "vae": recipe.vae.steps,
             "unet": recipe.unet.steps, "probe": scene_recipe.probe_steps,
             "contrastive": scene_recipe.contrastive_steps}
    modelled = {m: steps[m] * med[m] for m in steps}
    rows = []
    for label, sched, parts, seconds in plan:
        model = sum(modelled[m] for m in parts)
        if sched is None:
            what, per = "", None
        else:
            n, b = (sched.steps, sched.batch_size) if hasattr(sched, "steps") else sched
            what, per = f"{n:,} × {b}", costs[parts[0]]
        rows.append([label, what, per, model, seconds, None if seconds is None else model / seconds])
    whole = max(modelled["vdvae"], modelled["clip"] + modelled["vae"] + modelled["unet"]) \
        + modelled["probe"] + modelled["contrastive"]
    rows.append(["**whole command** (VDVAE beside CLIP then diffusion, then the scene networks)", "", None, whole,
                 None, None])
    return rows


def _threads_note(shipped: dict) -> str:
    """How the shipped training ran: in parallel, each of its two processes sets one torch thread
    (``nsdlib.mini.zoo._train_part``; the manifest's ``torch_threads`` is the parent's)."""
    if shipped.get("parallel"):
        return "the VDVAE and CLIP-then-diffusion in two processes side by side, one torch thread each"
    return f"one process, {shipped['torch_threads']} torch threads"


def _fake_captions(n: int, rng) -> list[list[str]]:
    words = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "star", "left", "right", "top",
             "bottom", "small", "large", "on", "a", "and", "of", "the", "grey", "background"]
    return [[" ".join(rng.choice(words, 9)) for _ in range(5)] for _ in range(n)]


def measure(repeats: int, n: int, tmp: Path) -> dict:
    """Seconds per step of every model at the full recipe's batch sizes (see the module docstring)."""
    rng = np.random.default_rng(0)
    recipe, srec = zoo.RECIPES["full"], scene.SCENE_RECIPES["full"]
    images64 = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    images32 = resize(images64, 32, filter="torch-bilinear")
    captions = _fake_captions(n, rng)
    emb = ClipEmbedder.from_pretrained(zoo.SHIPPED / "clip")
    text = emb.text([c[0] for c in captions], progress=False)
    vision = emb.vision(images64, progress=False)
    comps = zoo.mini_diffusion_components(emb.dim)
    latents = torch.randn(n, comps["vae"].config.latent_channels, 8, 8)
    x = to_tensor(images64)
    labels = {a: rng.integers(0, len(scene.CLASSES[a]), n) for a in scene.ATTRIBUTES}
    counter = iter(range(1 << 30))

    def fresh() -> Path:  # every run starts from no checkpoint
        return tmp / f"run{next(counter)}"

    def vdvae(steps):
        out = fresh()
        return lambda: zoo.train_vdvae(images32, out / "vdvae.pt", recipe.vdvae, kl_warmup=recipe.vdvae_kl,
                                       progress=False, stop_after=steps)

    def clip(steps):
        out = fresh()
        return lambda: zoo.train_clip(images64, captions, out / "clip", recipe.clip, progress=False, stop_after=steps)

    def vae(steps):
        model, out = copy.deepcopy(comps["vae"]), fresh()
        return lambda: zoo.train_vae(images64, model, recipe.vae, out / "vae.ckpt", progress=False, stop_after=steps)

    def unet(steps):
        unet_, out = make_dual_guided(copy.deepcopy(comps["image_unet"]), copy.deepcopy(comps["text_unet"])), fresh()
        return lambda: zoo.train_unet(latents, text, vision, emb.unconditional(), unet_, comps["scheduler_config"],
                                      recipe.unet, out / "unet.ckpt", progress=False, stop_after=steps)

    def probe(steps):  # the scene module's own training loops, for ``steps`` steps
        return lambda: scene._train_probe(x, labels, dataclasses.replace(srec, probe_steps=steps), 0, False)

    def contrastive(steps):
        return lambda: scene._train_contrastive(x, dataclasses.replace(srec, contrastive_steps=steps), 0, False)

    makers = {"vdvae": vdvae, "clip": clip, "vae": vae, "unet": unet, "probe": probe, "contrastive": contrastive}
    costs = {}
    for name, make in makers.items():
        costs[name] = time_steps(make, K_STEPS[name], repeats)
        print(name, {clock: f"{c['median']:.3f} s per step ({c['min']:.3f}-{c['max']:.3f})"
                     for clock, c in costs[name].items()}, flush=True)
    return costs


def quality_rows(ev: dict, sc: dict) -> list:
    """The shipped manifest's held-out figures, each beside its baseline from the same run."""
    val = sc["validation"]
    attrs = ("colour", "shape", "position")
    return [["small VDVAE", "reconstruction SSIM (32 × 32), posterior means of all blocks", ev["vdvae_ssim"],
             f"{ev['vdvae_ssim_shuffled']:.3f} (shuffled pairs)"],
            ["small VDVAE", "SSIM, the first 15 blocks from the posterior, the rest from the prior (temperature 1)",
             ev["vdvae_ssim_15"], f"{ev['vdvae_ssim_15_shuffled']:.3f} (shuffled pairs)"],
            ["small CLIP", "own caption ranked first among 10", ev["clip_top1_of_10"],
             f"{ev['clip_chance']:.3f} (chance)"],
            ["small diffusion", f"2-way identification (small-CLIP features) of samples from pure noise, true "
             f"embeddings, {ev['diffusion_steps']} DDIM steps, guidance {ev['diffusion_guidance_scale']:g}",
             ev["diffusion_identification"], "0.500 (chance)"],
            ["scene probe", f"main object's {' / '.join(attrs)} on the {val['colour']['n']} clean test stimuli",
             " / ".join(f"{val[a]['accuracy']:.2f}" for a in attrs),
             " / ".join(f"{val[a]['chance']:.2f}" for a in attrs) + " (permutation chance)"]]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=256, help="random training images the steps draw from")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    run = Session("minimodels", "benchmarks/bench_minimodels.py", argv=argv, versions=("diffusers", "transformers"))
    shipped = zoo.read_models_manifest(zoo.SHIPPED)
    with tempfile.TemporaryDirectory(prefix="bench-minimodels-") as tmp:
        costs = measure(args.repeats, args.images, Path(tmp))
    recipe, srec = zoo.RECIPES["full"], scene.SCENE_RECIPES["full"]
    run.values.update(step_costs=costs, shipped_version=shipped["version"],
                      shipped_torch_threads=shipped["torch_threads"], shipped_note=shipped.get("note", ""))
    run.table("steps", "One training step of each mini model at the full recipe's batch size, one thread (process "
              "CPU seconds, median and range over the repeats), and the recipe modelled as steps × a step's cost "
              "(no peer: nothing else trains these models)",
              ["model", "steps × batch", "CPU s per step", "recipe modelled s", "shipped run's s (manifest)",
               "modelled / shipped"], modelled_rows({m: c["cpu"] for m, c in costs.items()}, recipe, srec, shipped),
              ["{}", "{}", "{:.3f}", "{:,.0f}", "{:,.0f}", "{:.2f}"],
              note=f"Shipped run's seconds: the manifest of the shipped models (models version {shipped['version']}; "
                   f"{_threads_note(shipped)}; wall clock on a machine shared with other work). Not modelled: "
                   "encoding the training latents and CLIP embeddings, checkpoints, the evaluation.")
    run.table("steps_wall", "The same steps in wall-clock seconds (median and range; on a loaded machine they exceed "
              "the CPU seconds by the share of a core the process got)", ["model", "wall s per step", "CPU s per step"],
              [[m, c["wall"], c["cpu"]] for m, c in costs.items()], ["{}", "{:.3f}", "{:.3f}"])
    ev = shipped["evaluation"]
    run.table("quality", f"Held-out quality of the shipped models on the {ev['n_images']} shared (test) images, "
              f"from their manifest (models version {shipped['version']}, world version "
              f"{shipped['world']['generator_version']}; measured by the training run, not by this script)",
              ["model", "measure", "measured", "baseline (same run)"], quality_rows(ev, shipped["scene"]),
              ["{}", "{}", "{:.3f}", "{}"])
    run.write(args.out)
    return {"costs": costs}


if __name__ == "__main__":
    main()
