"""nsdlib.features: the metrics' networks build offline, from the local cache only (small, seeded)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nsdlib import assets, names
from nsdlib import features as F

torch.set_num_threads(1)  # 2 threads spin-wait on a shared 2-core machine


def _images(n=5, size=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _noisy(images, amount=40, seed=1):
    rng = np.random.default_rng(seed)
    return np.clip(images.astype(int) + rng.integers(-amount, amount + 1, images.shape), 0, 255).astype(np.uint8)


def test_feature_input_is_resized_bilinear_and_normalised():
    ims = _images(2, 40)
    x = F._to_input(ims, 24, F.IMAGENET_MEAN, F.IMAGENET_STD, torch.device("cpu"))
    ref = torch.from_numpy(ims).permute(0, 3, 1, 2).float() / 255
    ref = torch.nn.functional.interpolate(ref, size=(24, 24), mode="bilinear", antialias=True, align_corners=False)
    ref = (ref - torch.tensor(F.IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(F.IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, ref, rtol=0, atol=0)


def test_inception_builds_and_extracts_with_random_weights():
    net = F.inception_network(pretrained=False)
    assert net.features(_images(2, 40))["inceptionv3"].shape == (2, 2048)
    assert not net.trained and "RANDOM" in net.description


def test_mini_models_report_missing_weights_as_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    nets, unavailable = F.feature_networks("mini")
    assert nets == []
    assert set(unavailable) == {"alexnet2", "alexnet5", "inceptionv3", "efficientnet", "swav", "clip"}
    gt = _images(4, 32)
    rep = F.evaluate_images(gt, _noisy(gt), models="mini", progress=False)
    assert np.isnan(rep.means["swav"]) and rep.status["swav"] == "unavailable"
    assert "not available" in rep.sources["alexnet2"] and "nsdlib fetch metrics" in rep.sources["alexnet2"]
    assert np.isfinite(rep.means["ssim"])
    # with the small CLIP given, CLIP is computed and says which CLIP it is
    rep = F.evaluate_images(gt, gt, models="mini", clip=lambda x: x.reshape(len(x), -1)[:, ::7].astype(np.float32),
                            metrics=("clip",), progress=False)
    assert rep.means["clip"] == 1.0 and "small CLIP" in rep.sources["clip"]
    with pytest.raises(assets.MissingAssetError, match="torchvision-metrics"):
        F.feature_networks("pretrained")


def test_one_table_and_one_check_decide_which_feature_networks_run(tmp_path, monkeypatch):
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert set(F.METRIC_ASSETS) == (set(names.IDENTIFICATION_METRICS) | set(names.DISTANCE_METRICS)) - {"clip"}
    assert set(F.METRIC_ASSETS.values()) <= set(assets.ASSETS)
    for asset in set(F.METRIC_ASSETS.values()):
        assert F.network_usable("pretrained", asset) and not F.network_usable("mini", asset)
    monkeypatch.setattr(assets, "available", lambda name: name == "swav")
    assert F.network_usable("mini", "swav") and not F.network_usable("mini", "torchvision-metrics")


def test_torchvision_weights_load_from_local_cache_only(tmp_path, monkeypatch):
    from torchvision.models import efficientnet_b1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    state = efficientnet_b1(weights=None).state_dict()
    torch.save(state, cache / "efficientnet_b1_rwightman-bac287d4.pth")
    for name in ("alexnet-owt-7be5be79.pth", "inception_v3_google-0cc3c7bd.pth"):
        (cache / name).write_bytes(b"placeholder")  # only their presence is checked here
    assert assets.available("torchvision-metrics")
    nets, unavailable = F.feature_networks("mini", metrics=("efficientnet",))
    assert [n.name for n in nets] == ["efficientnet"] and nets[0].trained and unavailable == {}
    net = F.efficientnet_network(pretrained=True)
    ims = _images(2, 32)
    ref = efficientnet_b1(weights=None)
    ref.load_state_dict(state)
    ref.eval()
    with torch.no_grad():
        x = F._to_input(ims, 224, F.IMAGENET_MEAN, F.IMAGENET_STD, torch.device("cpu"))
        want = ref.avgpool(ref.features(x)).flatten(1).numpy()
    np.testing.assert_allclose(net.features(ims)["efficientnet"], want, rtol=1e-4, atol=1e-5)


def test_swav_checkpoint_loading(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(0)
    src = resnet50(weights=None).state_dict()
    ckpt = {f"module.{k}": v for k, v in src.items() if not k.startswith("fc.")}
    ckpt["module.projection_head.0.weight"] = torch.zeros(2048, 2048)
    ckpt["module.prototypes.weight"] = torch.zeros(3000, 128)
    path = tmp_path / "swav.pth.tar"
    torch.save(ckpt, path)
    state = F.load_swav_state_dict(path)
    assert "fc.weight" not in state and not any(k.startswith(("projection", "prototypes")) for k in state)
    torch.testing.assert_close(state["layer4.2.conv3.weight"], src["layer4.2.conv3.weight"])
    net = F.swav_network(path)
    assert net.trained and net.features(_images(2, 32))["swav"].shape == (2, 2048)
    del ckpt["module.layer1.0.conv1.weight"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="layer1.0.conv1.weight"):
        F.load_swav_state_dict(path)


def test_clip_network_from_transformers_model(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    tower = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(num_hidden_layers=1, **tower), projection_dim=16,
                     vision_config=dict(num_hidden_layers=2, image_size=32, patch_size=8, **tower))
    torch.manual_seed(0)
    model = CLIPModel(cfg).eval()
    model.save_pretrained(tmp_path / "clip")  # a full CLIP folder, like the "clip" asset
    ims = _images(3, 48)
    net = F.clip_network(tmp_path / "clip", description="tiny CLIP (test)", trained=False)
    x = torch.from_numpy(ims).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(F.CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(F.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=x)
        want = (out if torch.is_tensor(out) else out.pooler_output).numpy()
    np.testing.assert_allclose(net.features(ims)["clip"], want, rtol=1e-4, atol=1e-5)
