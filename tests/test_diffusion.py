"""nsdlib.diffusion on small randomly initialised Versatile Diffusion components.

The components are diffusers' own classes (AutoencoderKL, UNet2DConditionModel,
UNetFlatConditionModel, DualTransformer2DModel) with tiny widths; contexts have the real
token counts (77 text, 257 vision).
"""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from nsdlib import assets
from nsdlib.diffusion import (
    DualGuidedDiffusion,
    load_components,
    make_dual_guided,
    noising_schedule,
    random_components,
    resize_to_model,
    save_components,
    set_mixing,
    vae_input,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: one thread avoids OpenMP spin-waiting on a shared 2-core machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

D = 16  # cross-attention width (the CLIP projection size of a small model)
SIZE = 32  # output side in pixels: latents of 8 x 8


@pytest.fixture(scope="module")
def components():
    return random_components(cross_attention_dim=D, image_size=SIZE, seed=3)


@pytest.fixture(scope="module")
def vd(components):
    return DualGuidedDiffusion(**copy.deepcopy(components))


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    n = 3
    return dict(
        first_guesses=rng.integers(0, 256, (n, 20, 20, 3), dtype=np.uint8),
        text_embeds=rng.normal(size=(n, 77, D)).astype(np.float32),
        vision_embeds=rng.normal(size=(n, 257, D)).astype(np.float32),
        uncond_text=rng.normal(size=(77, D)).astype(np.float32),
        uncond_vision=rng.normal(size=(257, D)).astype(np.float32),
    )


FAST = dict(num_steps=4, strength=0.75, progress=False)  # 3 steps run


def test_every_transformer_is_paired(components):
    from diffusers.models import DualTransformer2DModel, Transformer2DModel

    comps = copy.deepcopy(components)
    names = [n for n, m in comps["image_unet"].named_modules() if type(m) is Transformer2DModel]
    text_tf = {n: comps["text_unet"].get_submodule(n) for n in names}
    unet = make_dual_guided(comps["image_unet"], comps["text_unet"])
    assert unet.config.dual_cross_attention
    for n in names:
        dual = unet.get_submodule(n)
        assert isinstance(dual, DualTransformer2DModel)
        assert dual.transformers[1] is text_tf[n]
        assert all(p.device.type == "cpu" for p in dual.parameters())  # no meta placeholders left
    set_mixing(unet, 0.4)
    assert {unet.get_submodule(n).mix_ratio for n in names} == {0.4}
    assert unet.get_submodule(names[0]).condition_lengths == [77, 257]
    with pytest.raises(ValueError, match="text_weight"):
        set_mixing(unet, 1.5)


def test_mismatched_unets_are_refused(components):
    small = random_components(cross_attention_dim=D + 8, image_size=SIZE)
    with pytest.raises(ValueError, match="cross_attention_dim"):
        make_dual_guided(copy.deepcopy(components["image_unet"]), small["text_unet"])


def test_output_shape_and_dtype(vd, inputs):
    out = vd.reconstruct(**inputs, **FAST)
    assert vd.image_size == SIZE
    assert out.shape == (3, SIZE, SIZE, 3) and out.dtype == np.uint8


def test_deterministic_and_seeded_per_image_not_per_position(vd, inputs):
    a = vd.reconstruct(**inputs, seed=5, batch_size=3, **FAST)
    b = vd.reconstruct(**inputs, seed=5, batch_size=3, **FAST)
    np.testing.assert_array_equal(a, b)
    c = vd.reconstruct(**inputs, seed=6, batch_size=3, **FAST)
    assert np.abs(a.astype(int) - c).max() > 0
    # image 2 alone, told it is image 2 of the dataset, in a batch of one: the same result
    sub = {k: (v[2:] if k not in ("uncond_text", "uncond_vision") else v) for k, v in inputs.items()}
    alone = vd.reconstruct(**sub, seed=5, indices=[2], batch_size=1, **FAST)
    assert np.abs(alone[0].astype(int) - a[2]).max() <= 1
    # the seed rule is documented: seed + index, one CPU generator per image
    noise = vd.initial_noise([2, 7], seed=5)
    torch.testing.assert_close(noise[1:], torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(12)))


def test_strength_zero_is_the_vae_round_trip(vd, inputs):
    out = vd.reconstruct(**inputs, strength=0.0, progress=False)
    np.testing.assert_array_equal(out, vd.vae_round_trip(inputs["first_guesses"]))


def _count_unet_calls(vd):
    calls = []
    handle = vd.unet.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    return calls, handle


def test_strength_075_of_50_steps_runs_37(vd, inputs):
    calls, handle = _count_unet_calls(vd)
    try:
        one = {k: (v[:1] if k not in ("uncond_text", "uncond_vision") else v) for k, v in inputs.items()}
        vd.reconstruct(**one, num_steps=50, strength=0.75, progress=False)
        assert len(calls) == 37 and set(calls) == {2}  # guided: unconditional + conditional in one batch
        calls.clear()
        vd.reconstruct(**one, num_steps=50, strength=0.75, guidance_scale=1.0, progress=False)
        assert len(calls) == 37 and set(calls) == {1}
    finally:
        handle.remove()


# ------------------------------------------- where the first guess's latent is noised
def _brain_diffuser_schedule(num_steps=50, strength=0.75, n_train=1000):
    """Brain-Diffuser's img2img schedule, transcribed from its versatile_diffusion code.

    ``make_ddim_timesteps("uniform")``: ``range(0, 1000, 1000 // num_steps) + 1``;
    ``t_enc = int(strength * num_steps)``; ``stochastic_encode`` noises with
    ``ddim_alphas[t_enc] = alphas_cumprod[ddim_timesteps[t_enc]]``; ``decode_dc`` runs
    ``ddim_timesteps[:t_enc]`` from the last. Betas: ``make_beta_schedule("linear")`` with
    vd.yaml's 0.00085 to 0.012, ``linspace(sqrt(start), sqrt(end), 1000) ** 2`` in float64.
    """
    ddim = np.arange(0, n_train, n_train // num_steps) + 1
    t_enc = int(strength * num_steps)
    betas = np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, n_train, dtype=np.float64) ** 2
    return dict(noise_t=int(ddim[t_enc]), first_step=int(ddim[t_enc - 1]), alphas_cumprod=np.cumprod(1 - betas))


def test_noising_timestep_of_each_mode_against_brain_diffusers_schedule(vd):
    bd = _brain_diffuser_schedule()
    assert (bd["noise_t"], bd["first_step"]) == (741, 721)
    sched = vd.scheduler()  # Versatile Diffusion's DDIM settings (the defaults of a model without a config)
    np.testing.assert_allclose(sched.alphas_cumprod.numpy(), bd["alphas_cumprod"], rtol=1e-6)
    t_first, steps = noising_schedule(sched, 50, 0.75, "first-step")
    t_bd, steps_bd = noising_schedule(vd.scheduler(), 50, 0.75, "brain-diffuser")
    assert len(steps) == 37 and int(steps[0]) == bd["first_step"] and int(steps[-1]) == 1
    assert t_first == bd["first_step"] and t_bd == bd["noise_t"]
    assert steps_bd.tolist() == steps.tolist()  # both modes denoise the same 37 steps
    # the share of the first guess's latent that survives the noising: sqrt(alpha_bar)
    keep = {mode: float(sched.alphas_cumprod[t]) ** 0.5 for mode, t in (("first-step", t_first), ("bd", t_bd))}
    assert keep["first-step"] == pytest.approx(0.266, abs=1e-3) and keep["bd"] == pytest.approx(0.246, abs=1e-3)
    assert keep["bd"] == pytest.approx(bd["alphas_cumprod"][741] ** 0.5, rel=1e-6)
    assert keep["first-step"] / keep["bd"] == pytest.approx(1.08, abs=0.005)  # about 8 % more survives


def test_noising_schedule_edges(vd):
    t, steps = noising_schedule(vd.scheduler(), 50, 0.0, "brain-diffuser")
    assert t is None and len(steps) == 0  # strength 0: nothing is noised, nothing run
    t, steps = noising_schedule(vd.scheduler(), 50, 1.0, "first-step")
    assert t == int(steps[0]) == 981 and len(steps) == 50
    with pytest.raises(ValueError, match="none before"):
        noising_schedule(vd.scheduler(), 50, 1.0, "brain-diffuser")
    with pytest.raises(ValueError, match="noise_at must be one of 'first-step', 'brain-diffuser'"):
        noising_schedule(vd.scheduler(), 50, 0.75, "late")


def test_reconstruct_noises_at_the_modes_timestep(vd, inputs, monkeypatch):
    seen = []
    make = vd.scheduler

    def spying_scheduler():
        sched = make()
        add = sched.add_noise
        sched.add_noise = lambda x, noise, t: (seen.append(t.tolist()), add(x, noise, t))[1]
        return sched

    monkeypatch.setattr(vd, "scheduler", spying_scheduler)
    one = {k: (v[:2] if k not in ("uncond_text", "uncond_vision") else v) for k, v in inputs.items()}
    calls, handle = _count_unet_calls(vd)
    try:
        a = vd.reconstruct(**one, num_steps=50, strength=0.75, guidance_scale=1.0, progress=False)
        b = vd.reconstruct(**one, num_steps=50, strength=0.75, guidance_scale=1.0, noise_at="brain-diffuser",
                           progress=False)
    finally:
        handle.remove()
    assert seen == [[721, 721], [741, 741]] and len(calls) == 2 * 37
    assert np.abs(a.astype(int) - b).max() > 0
    with pytest.raises(ValueError, match="noise_at"):
        vd.reconstruct(**one, num_steps=4, noise_at="late", progress=False)


def test_resize_to_model_is_stage_2s_resize():
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    up = resize_to_model(small, 64)
    assert up.shape == (2, 64, 64, 3) and up.dtype == np.uint8
    as_vae = ((vae_input(small, 64) + 1) / 2 * 255).permute(0, 2, 3, 1).numpy()
    assert np.abs(up.astype(float) - as_vae).max() <= 0.5 + 1e-3  # the VAE's input, rounded to grey levels
    assert resize_to_model(up, 64) is up


def _reference_single_guided(components, transformer_source, first_guesses, cond, uncond, *, num_steps, strength,
                             guidance_scale, seed):
    """Image-to-image with a plain (single-context) UNet, written with diffusers' parts only.

    ``transformer_source``: "text" puts the text UNet's transformers into the image UNet (the
    text-guided model), "image" keeps the image UNet as it is (the vision-guided model).
    """
    from diffusers import DDIMScheduler
    from diffusers.models import Transformer2DModel

    comps = copy.deepcopy(components)
    unet = comps["image_unet"].eval()
    if transformer_source == "text":
        for name in [n for n, m in unet.named_modules() if type(m) is Transformer2DModel]:
            parent, idx = name.rsplit(".", 1)
            unet.get_submodule(parent)[int(idx)] = comps["text_unet"].get_submodule(name)
    vae = comps["vae"].eval()
    sched = DDIMScheduler(**comps["scheduler_config"], clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(num_steps)
    n_run = int(num_steps * strength)
    timesteps = sched.timesteps[num_steps - n_run:]
    x = torch.from_numpy(first_guesses).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bicubic", antialias=True).clamp(0, 1) * 2 - 1
    out = []
    with torch.no_grad():
        for i in range(len(x)):
            lat = vae.encode(x[i:i + 1]).latent_dist.mode() * vae.config.scaling_factor
            noise = torch.randn((1, 4, SIZE // 4, SIZE // 4), generator=torch.Generator().manual_seed(seed + i))
            lat = sched.add_noise(lat, noise, timesteps[:1])
            ctx = torch.cat([torch.from_numpy(uncond)[None], torch.from_numpy(cond[i:i + 1])])
            for t in timesteps:
                eps_u, eps_c = unet(torch.cat([lat, lat]), t, encoder_hidden_states=ctx).sample.chunk(2)
                lat = sched.step(eps_u + guidance_scale * (eps_c - eps_u), t, lat, eta=0.0).prev_sample
            img = vae.decode(lat / vae.config.scaling_factor).sample
            out.append(((img / 2 + 0.5).clamp(0, 1) * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8))
    return np.concatenate(out)


@pytest.mark.parametrize("text_weight, source", [(1.0, "text"), (0.0, "image")])
def test_text_weight_one_or_zero_is_single_guidance(components, vd, inputs, text_weight, source):
    settings = dict(num_steps=6, strength=0.75, guidance_scale=7.5, seed=11)
    ours = vd.reconstruct(**inputs, text_weight=text_weight, progress=False, **settings)
    cond, uncond = ((inputs["text_embeds"], inputs["uncond_text"]) if source == "text"
                    else (inputs["vision_embeds"], inputs["uncond_vision"]))
    ref = _reference_single_guided(components, source, inputs["first_guesses"], cond, uncond, **settings)
    assert np.abs(ours.astype(int) - ref).max() <= 1
    other = vd.reconstruct(**inputs, text_weight=1.0 - text_weight, progress=False, **settings)
    assert np.abs(other.astype(int) - ours).mean() > 1  # the two guidances really differ


def test_mixed_weight_differs_from_both_ends(vd, inputs):
    outs = [vd.reconstruct(**inputs, text_weight=w, seed=2, **FAST) for w in (0.0, 0.4, 1.0)]
    assert np.abs(outs[1].astype(int) - outs[0]).max() > 0
    assert np.abs(outs[1].astype(int) - outs[2]).max() > 0


def test_saved_components_load_back(components, vd, inputs, tmp_path):
    save_components(components, tmp_path / "vd")
    back = DualGuidedDiffusion.from_pretrained(tmp_path / "vd")
    assert back.scheduler_config["beta_schedule"] == "scaled_linear"
    np.testing.assert_array_equal(back.reconstruct(**inputs, **FAST), vd.reconstruct(**inputs, **FAST))


def test_missing_asset_and_incomplete_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path))
    with pytest.raises(assets.MissingAssetError, match="nsdlib fetch vd"):
        DualGuidedDiffusion.from_pretrained()
    (tmp_path / "partial" / "vae").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="image_unet"):
        load_components(tmp_path / "partial")


def test_bad_inputs_are_refused(vd, inputs):
    bad = dict(inputs, text_embeds=inputs["text_embeds"][:, :, :8])
    with pytest.raises(ValueError, match=r"text_embeds must have shape \(3, 77, 16\)"):
        vd.reconstruct(**bad, **FAST)
    nan = dict(inputs, vision_embeds=np.full_like(inputs["vision_embeds"], np.nan))
    with pytest.raises(ValueError, match="NaN"):
        vd.reconstruct(**nan, **FAST)
    with pytest.raises(ValueError, match="strength"):
        vd.reconstruct(**inputs, num_steps=4, strength=1.5, progress=False)
    with pytest.raises(ValueError, match="uint8"):
        vd.reconstruct(**dict(inputs, first_guesses=inputs["first_guesses"] / 255.0), **FAST)
    with pytest.raises(ValueError, match="one index per image"):
        vd.reconstruct(**inputs, indices=[0, 1], **FAST)


# ------------------------------------------------- nsdlib.pipeline.stage2
class _FakeData:
    """Stands in for nsdlib.pipeline.data: images, captions and betas that linearly encode
    the leading principal components of the images' CLIP embeddings (of the run's random
    stand-in CLIP), plus noise."""

    def __init__(self, n_train=40, n_test=8, n_voxels=120, seed=0):
        from nsdlib import clip
        from nsdlib.pipeline import context

        rng = np.random.default_rng(seed)
        colours = ["red", "green", "blue", "yellow"]
        shapes = ["circle", "square", "star"]
        n = n_train + n_test
        base = rng.integers(0, 256, (n, 1, 1, 3))  # one colour per image, plus texture
        self.images = np.clip(base + rng.normal(0, 20, (n, 48, 48, 3)), 0, 255).astype(np.uint8)
        self.caps = [[f"a {colours[i % 4]} {shapes[i % 3]}", f"one {shapes[i % 3]} that is {colours[i % 4]}"]
                     for i in range(n)]
        emb = clip.random_clip(**context.RANDOM_CLIP)
        feats = np.concatenate([emb.text(self.caps, progress=False).reshape(n, -1),
                                emb.vision(self.images, progress=False).reshape(n, -1)], axis=1)
        u, sv, _ = np.linalg.svd(feats - feats.mean(0), full_matrices=False)
        latent = u[:, :8] / u[:, :8].std(0)
        betas = latent @ rng.normal(size=(8, n_voxels)) + 0.3 * rng.normal(size=(n, n_voxels))
        betas = betas.astype(np.float32)
        self.subj = type("SubjectData", (), dict(
            train_betas=betas[:n_train], test_betas=betas[n_train:], train_ids=np.arange(n_train, dtype=np.int64),
            test_ids=np.arange(n_train, n, dtype=np.int64), n_voxels=n_voxels))()
        self.n_train = n_train

    def _sl(self, split):
        return slice(0, self.n_train) if split == "train" else slice(self.n_train, None)

    def subject_data(self, cfg):
        return self.subj

    def captions(self, cfg, split):
        return self.caps[self._sl(split)]

    def stimuli(self, cfg, split, size=None):
        return self.images[self._sl(split)]


@pytest.fixture(scope="module")
def fake_data():
    return _FakeData()


@pytest.fixture
def stage2_run(fake_data, tmp_path, monkeypatch):
    from nsdlib import RunConfig
    from nsdlib.pipeline import context, data, dataset, stage2

    for name in ("subject_data", "captions", "stimuli"):
        monkeypatch.setattr(data, name, getattr(fake_data, name))
    monkeypatch.setattr(dataset, "ensure_mini_world", lambda cfg, progress=True: None)
    context.forget()
    monkeypatch.setitem(stage2.QUICK_DIFFUSION_SETTINGS, "num_steps", 4)
    cfg = RunConfig(dataset="mini", subject=1, quick=True, workdir=str(tmp_path / "work"), device="cpu")
    return stage2, cfg


def test_clip_predictions_recover_encoded_embeddings(stage2_run, fake_data):
    stage2, cfg = stage2_run
    pred = stage2.clip_predictions(cfg, progress=False)
    assert pred["text"].shape == (8, 77, 64) and pred["vision"].shape == (8, 257, 64)
    assert pred["text_token_r"].shape == (77,) and pred["vision_token_r"].shape == (257,)
    assert float(pred["alpha_text"]) in stage2.CV_ALPHAS  # mini-NSD: alphas by cross-validation
    assert pred["vision_identification"] > 0.9 and pred["text_identification"] > 0.8
    fixed = stage2.clip_predictions(cfg, alpha="paper", progress=False)
    assert float(fixed["alpha_text"]) == 50_000.0 and float(fixed["alpha_vision"]) == 50_000.0
    # betas carrying no information about the images: chance
    shuffled = _FakeData(seed=1)
    shuffled.subj.train_betas = np.random.default_rng(2).permutation(shuffled.subj.train_betas)
    from nsdlib.pipeline import data

    for name in ("subject_data", "captions", "stimuli"):  # undone by monkeypatch's restore of the attributes
        setattr(data, name, getattr(shuffled, name))
    cfg2 = cfg.replace(workdir=str(Path(cfg.workdir) / "shuffled"))
    chance = stage2.clip_predictions(cfg2, progress=False)
    assert chance["vision_identification"] < 0.8


def test_stage2_images_cached_per_parameter_set(stage2_run):
    stage2, cfg = stage2_run
    from nsdlib.store import Store

    fg = np.random.default_rng(4).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    a = stage2.stage2_images(cfg, fg, noise="none", progress=False)
    assert a.shape == (8, 64, 64, 3) and a.dtype == np.uint8
    b = stage2.stage2_images(cfg, fg, noise="none", progress=False)
    np.testing.assert_array_equal(a, b)
    events = [e["event"] for e in Store.for_config(cfg).events() if e["name"] == "stage2_images"]
    assert events == ["computed", "reused"]
    # a subset, seeded by position in the test set, reproduces the full run's images
    sub = stage2.stage2_images(cfg, fg, noise="none", indices=[5, 2], progress=False)
    assert np.abs(sub.astype(int) - a[[5, 2]]).max() <= 1
    # other first guesses (e.g. noised) are another parameter set, whatever the label
    c = stage2.stage2_images(cfg, np.flip(fg, 0).copy(), noise="none", progress=False)
    assert np.abs(c.astype(int) - a).max() > 0
    with pytest.raises(ValueError, match=r"\(8, h, w, 3\)"):
        stage2.stage2_images(cfg, fg[:3], progress=False)
    with pytest.raises(TypeError, match="unknown stage-2 setting"):
        stage2.stage2_images(cfg, fg, steps=3)


def test_stage2_noise_timestep_is_a_setting_of_the_cache_key(stage2_run):
    stage2, cfg = stage2_run
    from nsdlib.store import Store

    assert stage2.DIFFUSION_SETTINGS["noise_at"] == stage2.QUICK_DIFFUSION_SETTINGS["noise_at"] == "first-step"
    fg = np.random.default_rng(5).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    ours = stage2.stage2_images(cfg, fg, indices=[0, 1], progress=False)
    same = stage2.stage2_images(cfg, fg, indices=[0, 1], noise_at="first-step", progress=False)
    bd = stage2.stage2_images(cfg, fg, indices=[0, 1], noise_at="brain-diffuser", progress=False)
    np.testing.assert_array_equal(ours, same)
    assert np.abs(bd.astype(int) - ours).max() > 0
    events = [e["event"] for e in Store.for_config(cfg).events() if e["name"] == "stage2_images"]
    assert events == ["computed", "reused", "computed"]
    with pytest.raises(ValueError, match="noise_at must be one of"):
        stage2.stage2_images(cfg, fg, noise_at="late", progress=False)


def test_stage2_with_pretrained_models_missing_names_the_asset(stage2_run, tmp_path, monkeypatch):
    stage2, cfg = stage2_run
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path / "no-assets"))
    fg = np.zeros((8, 16, 16, 3), np.uint8)
    with pytest.raises(assets.MissingAssetError, match="nsdlib fetch"):
        stage2.stage2_images(cfg.replace(models="pretrained"), fg, progress=False)


def test_stage2_loads_the_mini_zoos_models_when_present(stage2_run, tmp_path, monkeypatch):
    stage2, cfg = stage2_run
    from nsdlib.clip import random_clip
    from nsdlib.mini import zoo as mini_zoo
    from nsdlib.pipeline import context

    assert {s.kind for s in stage2.model_sources(cfg).values()} == {"random"}
    zoo = tmp_path / "zoo"
    trained_like = random_clip(**{**context.RANDOM_CLIP, "seed": 7})
    trained_like.save_pretrained(zoo / "clip")
    save_components(random_components(cross_attention_dim=trained_like.dim, image_size=32, seed=7),
                    zoo / "diffusion")
    monkeypatch.setattr(mini_zoo, "locate", lambda root, workdir=None, quick=False: zoo)
    assert stage2.model_sources(cfg)["clip"].kind == "random"  # the run's context found its sources once
    context.forget()  # as pipeline.zoo.mini_models does after training the zoo
    src = stage2.model_sources(cfg)
    assert src["clip"].kind == "mini" and src["vd"].kind == "mini"
    assert src["clip"].path == str(zoo / "clip") and src["vd"].path == str(zoo / "diffusion")
    images = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    np.testing.assert_allclose(stage2.clip_embedder(cfg).vision(images, progress=False),
                               trained_like.vision(images, progress=False), atol=1e-6)
    fg = np.zeros((8, 16, 16, 3), np.uint8)
    out = stage2.stage2_images(cfg, fg, progress=False, indices=[0])
    assert out.shape == (1, 32, 32, 3)  # the zoo's diffusion model sets the output size


def test_zero_snr_v_prediction_schedule_is_sampled_as_diffusers_does(components, vd, inputs, tmp_path):
    from nsdlib.mini.zoo import MINI_SCHEDULE

    comps = copy.deepcopy(components)
    comps["scheduler_config"] = {**comps["scheduler_config"], **MINI_SCHEDULE}
    settings = dict(num_steps=6, strength=1.0, guidance_scale=7.5, seed=11)
    ours = DualGuidedDiffusion(**copy.deepcopy(comps)).reconstruct(**inputs, text_weight=0.0, progress=False,
                                                                    **settings)
    ref = _reference_single_guided(comps, "image", inputs["first_guesses"], inputs["vision_embeds"],
                                   inputs["uncond_vision"], **settings)
    assert np.abs(ours.astype(int) - ref).max() <= 1
    default = vd.reconstruct(**inputs, text_weight=0.0, progress=False, **settings)
    assert np.abs(default.astype(int) - ours).mean() > 1  # the schedule is really used
    save_components(comps, tmp_path / "vd")
    back = DualGuidedDiffusion.from_pretrained(tmp_path / "vd")
    assert {k: back.scheduler_config[k] for k in MINI_SCHEDULE} == MINI_SCHEDULE
    np.testing.assert_array_equal(back.reconstruct(**inputs, text_weight=0.0, progress=False, **settings), ours)
