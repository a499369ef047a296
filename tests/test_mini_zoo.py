"""The mini model zoo: tokenizer, resumable training, the small models' shapes."""

import numpy as np
import pytest
import torch

from nsdlib.clip import N_TEXT_TOKENS, N_VISION_TOKENS, ClipEmbedder
from nsdlib.diffusion import DualGuidedDiffusion
from nsdlib.mini.scene import scene_networks_present
from nsdlib.mini.zoo import (
    KLWarmup,
    MiniModelsMissing,
    TrainSchedule,
    _train_in_parallel,
    build_caption_tokenizer,
    locate,
    read_models_manifest,
    train_loop,
    train_models,
    train_vdvae,
)
from nsdlib.vdvae import VDVAEConfig, load_vdvae, n_latents

TINY_VDVAE = VDVAEConfig(image_size=8, width=8, zdim=2, enc_blocks="8x1,8d2,4x1,4d4,1x1",
                         dec_blocks="1x1,4m1,4x1,8m4,8x1", no_bias_above=8, n_mixtures=2)


def test_tokenizer_marks_start_and_end_and_pads():
    tok = build_caption_tokenizer(["A red circle, left.", "two blue squares"])
    enc = tok(["a red circle", "Two BLUE squares!"], padding="max_length", max_length=77)
    ids = enc["input_ids"]
    assert all(len(row) == 77 for row in ids)
    assert ids[0][0] == tok.bos_token_id and ids[0][4] == tok.eos_token_id and ids[0][5] == tok.pad_token_id
    assert tok.eos_token_id == len(tok) - 1  # end-of-text has the largest id, as in OpenAI's CLIP
    assert tok.convert_ids_to_tokens(ids[1][1:5]) == ["two", "blue", "squares", "<|unk|>"]


def test_training_resumes_to_the_same_model(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = x @ torch.randn(5, 3)

    def make():
        torch.manual_seed(1)
        return torch.nn.Linear(5, 3)

    def loss_of(model):
        return lambda idx, gen, step: ((model(x[idx] + 0.01 * torch.randn(len(idx), 5, generator=gen))
                                        - y[idx]) ** 2).mean()

    sched = TrainSchedule(steps=30, batch_size=8, lr=0.05, warmup=3, checkpoint_every=10)
    whole = make()
    full = train_loop(whole, loss_of(whole), 64, sched, tmp_path / "a.ckpt", progress=False)
    part = make()
    first = train_loop(part, loss_of(part), 64, sched, tmp_path / "b.ckpt", progress=False, stop_after=17)
    resumed = make()  # a new process would start from fresh weights and find the checkpoint
    rest = train_loop(resumed, loss_of(resumed), 64, sched, tmp_path / "b.ckpt", progress=False)
    assert len(first) == 17 and len(rest) == 30 - 17
    np.testing.assert_allclose(first + rest, full, rtol=1e-6)
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert full[-1] < full[0] / 2


def test_vdvae_training_lowers_the_elbo_and_saves_a_loadable_model(tmp_path):

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (4, 1, 1, 3))
    images = np.clip(base + rng.normal(0, 10, (4, 8, 8, 3)), 0, 255).astype(np.uint8).repeat(8, axis=0)
    sched = TrainSchedule(steps=40, batch_size=8, lr=3e-3, warmup=5, checkpoint_every=20)
    model, losses = train_vdvae(images, tmp_path / "vdvae.pt", sched, config=TINY_VDVAE, progress=False)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    loaded = load_vdvae(tmp_path / "vdvae.pt")
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_kl_warmup_weights_coarse_blocks_then_ends_on_the_elbo():
    warm = KLWarmup(start=0.1, hold=10, full=20, max_resolution=4)  # TINY_VDVAE: blocks at 1, 4, 4, 8, 8
    np.testing.assert_allclose(warm.weights(TINY_VDVAE, 0).numpy(), [0.1, 0.1, 0.1, 1, 1])
    np.testing.assert_allclose(warm.weights(TINY_VDVAE, 15).numpy(), [0.55, 0.55, 0.55, 1, 1])
    np.testing.assert_allclose(warm.weights(TINY_VDVAE, 20).numpy(), np.ones(5))
    assert KLWarmup().at(0) == 1.0 and KLWarmup(start=0.5, hold=3, full=3).at(3) == 1.0
    with pytest.raises(ValueError, match="0 < start <= 1 and 0 <= hold <= full"):
        KLWarmup(start=0.0)
    with pytest.raises(ValueError, match="0 < start <= 1 and 0 <= hold <= full"):
        KLWarmup(start=0.5, hold=5, full=2)


def test_kl_warmup_puts_more_information_in_the_latents(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (4, 1, 1, 3))
    images = np.clip(base + rng.normal(0, 10, (4, 8, 8, 3)), 0, 255).astype(np.uint8).repeat(8, axis=0)
    sched = TrainSchedule(steps=30, batch_size=8, lr=3e-3, warmup=5, checkpoint_every=100)
    rates = []
    for warm in (KLWarmup(), KLWarmup(start=0.01, hold=30, full=30)):
        model, _ = train_vdvae(images, tmp_path / f"{warm.start}.pt", sched, config=TINY_VDVAE, kl_warmup=warm,
                               progress=False)
        with torch.no_grad():
            rates.append(float(model(torch.from_numpy(images))["rate"].mean()))
    assert rates[1] > 1.2 * rates[0]  # a cheaper KL buys more nats of latent information


@pytest.mark.slow
def test_quick_zoo_trains_evaluates_and_loads(mini_small_root, tmp_path):

    with pytest.raises(MiniModelsMissing, match=f"nsdlib mini train-models --root {mini_small_root}"):
        locate(mini_small_root, tmp_path, quick=True)
    torch.set_num_threads(1)
    out = train_models(mini_small_root, workdir=tmp_path, quick=True, progress=False)
    assert locate(mini_small_root, tmp_path, quick=True) == out
    man = read_models_manifest(out)
    assert man["complete"] and man["recipe"] == "quick" and man["n_training_images"] == 32
    assert man["scene"]["recipe"] == "quick" and scene_networks_present(out)  # the scene probe and contrastive CNN
    ev = man["evaluation"]
    assert 0 <= ev["clip_top1_of_10"] <= 1 and 0 <= ev["diffusion_identification"] <= 1
    assert -1 <= ev["vdvae_ssim"] <= 1 and -1 <= ev["vdvae_ssim_15"] <= 1
    vdvae = load_vdvae(out / "vdvae.pt")
    assert vdvae.config.n_dec_blocks >= 31 and n_latents(vdvae.config, 15) < n_latents(vdvae.config, 31)
    emb = ClipEmbedder.from_pretrained(out / "clip")
    caps = [["a red circle on the left", "a circle"]]
    assert emb.text(caps, progress=False).shape == (1, N_TEXT_TOKENS, emb.dim)
    img = np.full((1, 64, 64, 3), 100, np.uint8)
    assert emb.vision(img, progress=False).shape == (1, N_VISION_TOKENS, emb.dim)
    vd = DualGuidedDiffusion.from_pretrained(out / "diffusion")
    assert vd.image_size == 64 and vd.cross_attention_dim == emb.dim
    # a second call reuses the trained models
    mtime = (out / "vdvae.pt").stat().st_mtime_ns
    assert train_models(mini_small_root, workdir=tmp_path, quick=True, progress=False) == out
    assert (out / "vdvae.pt").stat().st_mtime_ns == mtime
    # training in two processes (one thread each) makes the same models as one process with one thread
    par = train_models(mini_small_root, workdir=tmp_path / "parallel", quick=True, progress=False, parallel=True)
    assert read_models_manifest(par)["parallel"] and not man["parallel"]
    assert read_models_manifest(par)["evaluation"] == ev
    for a, b in zip(vdvae.state_dict().values(), load_vdvae(par / "vdvae.pt").state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for f in ("clip/model.safetensors", "diffusion/vae/diffusion_pytorch_model.safetensors",
              "diffusion/image_unet/diffusion_pytorch_model.safetensors"):
        assert (out / f).read_bytes() == (par / f).read_bytes(), f


def test_training_needs_a_mini_nsd_root(tmp_path):

    with pytest.raises(FileNotFoundError, match="is not a mini-NSD root.*nsdlib mini generate --root"):
        train_models(tmp_path / "nothing", workdir=tmp_path)


def test_parallel_training_names_the_part_that_failed(tmp_path):

    # no mini-NSD at the root: both processes fail, and the error says which and how to go on
    with pytest.raises(RuntimeError, match=r"failed for vdvae \(exit code 1\), clip\+diffusion \(exit code 1\).*"
                                           r"run again to resume, or pass parallel=False"):
        _train_in_parallel(tmp_path / "no-world", tmp_path / "out", "quick", seed=0, progress=False)
