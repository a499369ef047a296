"""Tests of nsdlib.vdvae: the checkpoint manifest, latent sizes, decoding, loading."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from nsdlib import vdvae
from nsdlib.vdvae import IMAGENET64, MINI, VDVAE, CheckpointError, VDVAEConfig

torch.set_num_threads(1)  # the test machine is shared; one thread avoids oversubscription

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "reference" / "vdvae_imagenet64_state_dict.json"

# A very small VDVAE of the same classes: 8x8 images, 7 decoder blocks.
TINY = VDVAEConfig(image_size=8, width=16, zdim=2, bottleneck_multiple=0.25,
                   enc_blocks="8x1,8d2,4x1,4d4,1x1", dec_blocks="1x2,4m1,4x1,8m4,8x2",
                   no_bias_above=8, n_mixtures=3)


def _random_model(config=TINY, seed=0):
    torch.manual_seed(seed)
    model = VDVAE(config)
    with torch.no_grad():  # the prior's last layers start at zero; give every block something to do
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _images(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.skipif(not MANIFEST.exists(), reason="../shared/reference manifest not present")
def test_imagenet64_state_dict_matches_public_checkpoint_manifest():
    manifest = json.loads(MANIFEST.read_text())
    with torch.device("meta"):
        model = VDVAE(IMAGENET64)
    sd = model.state_dict()
    want = manifest["tensors"]
    assert sorted(sd) == sorted(want)
    assert {k: list(v.shape) for k, v in sd.items()} == want
    assert len(sd) == manifest["n_tensors"] == 2482
    assert sum(v.numel() for v in sd.values()) == manifest["n_params"] == 125_005_860


def test_latent_counts_imagenet64_and_mini():
    assert vdvae.n_latents(IMAGENET64, 15) == 13_344
    assert vdvae.n_latents(IMAGENET64, 31) == 91_168
    assert vdvae.n_latents(IMAGENET64) == 1_451_040
    assert IMAGENET64.n_dec_blocks == 75 and IMAGENET64.n_enc_blocks == 65
    # the mini model: >= 31 blocks, coarse to fine, block 15 the first at a quarter of the image size
    blocks = vdvae.parse_blocks(MINI.dec_blocks)
    assert len(blocks) >= 31
    res = [r for r, _, _ in blocks]
    assert res == sorted(res)
    assert res[14] == MINI.image_size // 4 and res[13] < res[14]
    assert res[30] == MINI.image_size // 2 and res[29] < res[30]
    assert vdvae.n_latents(MINI, 15) == 1_680
    assert vdvae.n_latents(MINI, 31) == 11_408


def test_parse_blocks_and_config_errors():
    assert vdvae.parse_blocks("1x2,4m1,8d2,16") == [(1, None, None), (1, None, None), (4, None, 1), (8, 2, None),
                                                   (16, None, None)]
    with pytest.raises(ValueError, match="block item"):
        vdvae.parse_blocks("4y3")
    with pytest.raises(ValueError, match="coarse to fine"):
        VDVAEConfig(image_size=8, width=8, zdim=2, enc_blocks="8x1,8d2,4x1,4d4,1x1", dec_blocks="4x1,1x1,8m4")
    with pytest.raises(ValueError, match="no 2x2"):
        VDVAEConfig(image_size=8, width=8, zdim=2, enc_blocks="8x1,8d2,4x1,4d4,1x1", dec_blocks="1x1,2x1,8m4")


def test_encode_shapes_and_flatten_roundtrip():
    model = _random_model()
    imgs = _images(5, 8)
    for n_blocks in (1, 3, 7):
        lat = vdvae.encode_latents(model, imgs, n_blocks, progress=False)
        assert lat.shape == (5, vdvae.n_latents(TINY, n_blocks)) and lat.dtype == np.float32
        parts = vdvae.unflatten_latents(torch.from_numpy(lat), TINY, n_blocks)
        assert [tuple(p.shape[1:]) for p in parts] == vdvae.latent_shapes(TINY, n_blocks)
        assert np.array_equal(vdvae.flatten_latents(parts).numpy(), lat)
    # the first blocks' latents do not depend on how many blocks are encoded
    l3 = vdvae.encode_latents(model, imgs, 3, progress=False)
    l7 = vdvae.encode_latents(model, imgs, 7, progress=False)
    np.testing.assert_array_equal(l7[:, : l3.shape[1]], l3)
    # posterior means differ from samples; samples are reproducible and batch-size independent
    mean = vdvae.encode_latents(model, imgs, 7, posterior="mean", progress=False)
    assert not np.allclose(mean, l7)
    np.testing.assert_allclose(vdvae.encode_latents(model, imgs, 7, batch_size=2, progress=False), l7, atol=1e-6)


def test_decode_deterministic_under_seed_and_uses_given_latents():
    model = _random_model()
    lat = vdvae.encode_latents(model, _images(6, 8), 3, progress=False)
    a = vdvae.decode_latents(model, lat, 3, seed=1, batch_size=4, progress=False)
    b = vdvae.decode_latents(model, lat, 3, seed=1, batch_size=6, progress=False)
    c = vdvae.decode_latents(model, lat, 3, seed=2, progress=False)
    assert a.shape == (6, 8, 8, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()  # the sampled (finer) blocks follow the seed
    other = vdvae.decode_latents(model, lat[::-1].copy(), 3, seed=1, progress=False)
    assert (other != a).any()  # and the given latents matter
    # temperature 0 keeps only the prior means: then the seed no longer matters
    t0a = vdvae.decode_latents(model, lat, 3, seed=1, temperature=0.0, progress=False)
    t0b = vdvae.decode_latents(model, lat, 3, seed=5, temperature=0.0, progress=False)
    np.testing.assert_array_equal(t0a, t0b)


def test_reconstruct_equals_encode_then_decode():
    model = _random_model()
    imgs = _images(5, 8)
    lat = vdvae.encode_latents(model, imgs, 3, seed=4, progress=False)
    want = vdvae.decode_latents(model, lat, 3, seed=4, progress=False)
    np.testing.assert_array_equal(vdvae.reconstruct_images(model, imgs, 3, seed=4, batch_size=2, progress=False),
                                  want)
    full = vdvae.reconstruct_images(model, imgs, progress=False)
    assert full.shape == imgs.shape and full.dtype == np.uint8


def test_decode_all_blocks_given_needs_no_noise():
    model = _random_model()
    lat = vdvae.encode_latents(model, _images(3, 8), TINY.n_dec_blocks, progress=False)
    a = vdvae.decode_latents(model, lat, TINY.n_dec_blocks, seed=1, progress=False)
    b = vdvae.decode_latents(model, lat, TINY.n_dec_blocks, seed=9, progress=False)
    np.testing.assert_array_equal(a, b)


def test_bad_inputs_give_clear_errors():
    model = _random_model()
    with pytest.raises(ValueError, match=r"\(n, 8, 8, 3\)"):
        vdvae.encode_latents(model, _images(2, 16), 3, progress=False)
    with pytest.raises(ValueError, match="n_blocks must be an integer from 0 to 7"):
        vdvae.encode_latents(model, _images(2, 8), 8, progress=False)
    with pytest.raises(ValueError, match=r"shape \(n, 36\)"):
        vdvae.decode_latents(model, np.zeros((2, 5), np.float32), 3, progress=False)
    bad = np.full((2, vdvae.n_latents(TINY, 3)), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        vdvae.decode_latents(model, bad, 3, progress=False)


def test_mixture_of_logistics_is_a_distribution():
    """Each channel's conditional, summed over its 256 levels, is 1 (so the joint sums to 1)."""
    torch.manual_seed(0)
    head = vdvae._DMoLHead(4, n_mixtures=3)
    h = torch.randn(1, 4, 1, 1)
    levels = torch.arange(256, dtype=torch.float32) / 127.5 - 1.0
    fixed = torch.tensor([0.3, -0.6, 0.9])
    with torch.no_grad():
        for c in range(3):
            x = fixed.repeat(256, 1)
            x[:, c] = levels  # channel c runs over its levels, the channels before it stay fixed
            lp, log_w = head.log_probs(h.expand(256, -1, -1, -1), x.reshape(256, 1, 1, 3))
            sums = lp[:, 0, 0, c, :].double().exp().sum(0)  # one sum per mixture component
            torch.testing.assert_close(sums, torch.ones(3, dtype=torch.float64), atol=1e-4, rtol=0)
        torch.testing.assert_close(log_w.exp().sum(-1), torch.ones_like(log_w[..., 0]))
        # nll is the mixture of those: a pixel at a component's location is likely
        nll = head.nll(h, torch.zeros(1, 1, 1, 3))
        assert torch.isfinite(nll).all() and (nll > 0).all()


def test_mixture_mode_known_answer():
    head = vdvae._DMoLHead(2, n_mixtures=2)
    out = torch.zeros(20)
    out[:2] = torch.tensor([0.0, 3.0])  # component 1 is the most probable
    rest = torch.zeros(3, 6)  # per channel: loc(2), log_s(2), coef(2)
    rest[:, 1] = torch.tensor([0.2, -0.4, 0.5])  # locations of component 1
    rest[:, 5] = torch.atanh(torch.tensor([0.5, -0.25, 0.1]))  # its colour coefficients
    out[2:] = rest.reshape(-1)
    with torch.no_grad():
        head.out_conv.weight.zero_()
        head.out_conv.bias.copy_(out)
        got = head.mode(torch.zeros(1, 2, 1, 1))[0, 0, 0]
    x0 = 0.2
    x1 = -0.4 + 0.5 * x0
    x2 = 0.5 - 0.25 * x0 + 0.1 * x1
    np.testing.assert_allclose(got.numpy(), [x0, x1, x2], atol=1e-6)


def test_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2, l1, l2 = (torch.randn(50, generator=g) for _ in range(4))
    want = torch.distributions.kl_divergence(torch.distributions.Normal(m1, l1.exp()),
                                             torch.distributions.Normal(m2, l2.exp()))
    torch.testing.assert_close(vdvae._gaussian_kl(m1, l1, m2, l2), want, rtol=1e-5, atol=1e-6)


def test_training_loss_is_finite_and_learns():
    torch.manual_seed(0)
    model = VDVAE(TINY)
    imgs = torch.from_numpy(np.repeat(_images(1, 8), 8, axis=0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(12):
        out = model(imgs)
        loss = out["elbo"].mean()
        assert torch.isfinite(loss)
        torch.testing.assert_close(out["elbo"], out["distortion"] + out["rate"])
        assert out["block_rates"].shape == (8, TINY.n_dec_blocks)
        torch.testing.assert_close(out["block_rates"].sum(dim=1), out["rate"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first - 0.2
    assert first > math.log(256) * 0.9  # starts near or above the uniform 8 bits per dimension


def test_save_and_load_roundtrip(tmp_path):
    model = _random_model()
    path = vdvae.save_vdvae(model, tmp_path / "tiny.pt")
    loaded = vdvae.load_vdvae(path)
    assert loaded.config == TINY
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    lat = vdvae.encode_latents(model, _images(2, 8), 3, progress=False)
    np.testing.assert_array_equal(vdvae.decode_latents(loaded, lat, 3, progress=False),
                                  vdvae.decode_latents(model, lat, 3, progress=False))
    with pytest.raises(CheckpointError, match="not the requested"):
        vdvae.load_vdvae(path, config=MINI)


def test_bare_state_dict_with_module_prefix_loads_strictly(tmp_path):
    model = _random_model()
    path = tmp_path / "bare.th"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded = vdvae.load_vdvae(path, config=TINY)
    torch.testing.assert_close(loaded.decoder.gain, model.decoder.gain)
    sd = dict(model.state_dict())
    sd.pop("decoder.gain")
    sd["decoder.extra"] = torch.zeros(1)
    sd["encoder.in_conv.bias"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.th")
    with pytest.raises(CheckpointError, match=r"1 missing.*decoder\.gain.*1 unexpected.*1 with another shape"):
        vdvae.load_vdvae(tmp_path / "bad.th", config=TINY)
    with pytest.raises(FileNotFoundError):
        vdvae.load_vdvae(tmp_path / "absent.th", config=TINY)
