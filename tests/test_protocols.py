"""nsdlib.protocols: the two evaluation chains, checked against transcriptions of each project's
evaluation code, and the protocol card (offline, small, seeded).

The ``"mindeye"`` transcription below follows MindEye2's ``src/final_evaluations.ipynb``
(commit c184718) line by line with the library versions its ``src/setup.sh`` pins
(torchvision 0.16: a tensor ``Resize`` does not antialias, written out here as
``antialias=False``; scikit-image 0.22: ``multichannel=True`` is swallowed by ``**kwargs``, as
it still is in the installed version). Pretrained weights are not available offline, so both
sides build the same randomly initialised networks from the same seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy as sp
import torch
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity
from torchvision import transforms
from torchvision.models import alexnet, efficientnet_b1, inception_v3, resnet50
from torchvision.models.feature_extraction import create_feature_extractor

from nsdlib import assets
from nsdlib import features as F
from nsdlib import metrics as M
from nsdlib import protocols as P
from nsdlib.images import resize

torch.set_num_threads(1)  # 2 threads spin-wait on a shared 2-core machine

N_IMAGES = 10
_MEAN, _STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _pairs(n=N_IMAGES, seed=0):
    """Fixed random test pairs: ground truth 425 x 425 (NSD's size), reconstructions 500 x 500,
    both blocky (smooth at the filters' scale); each reconstruction a noisy blend of its own
    image and another one, so that identification is neither perfect nor at chance."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 25, 25, 3))
    gt = np.repeat(np.repeat(base, 17, axis=1), 17, axis=2).astype(np.uint8)
    other = base[np.roll(np.arange(n), 1)]
    own = np.linspace(0.1, 0.6, n)[:, None, None, None]
    noisy = np.clip(own * base + (1 - own) * other + rng.integers(-60, 61, base.shape), 0, 255).round()
    rec = np.repeat(np.repeat(noisy, 20, axis=1), 20, axis=2).astype(np.uint8)
    return gt, rec


# ------------------------------------------------- MindEye2's code, transcribed
def _resize(size):
    # torchvision 0.16's transforms.Resize on a tensor: bilinear without antialiasing
    return transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=False)


def _mindeye_inputs(gt, rec):
    """all_images / all_recons as final_evaluations.ipynb holds them: floats in 0-1, resized to 256."""
    # their files hold contiguous NCHW float tensors in 0-1
    all_images = torch.from_numpy(gt).permute(0, 3, 1, 2).contiguous().float() / 255.0
    all_recons = torch.from_numpy(rec).permute(0, 3, 1, 2).contiguous().float() / 255.0
    imsize = 256
    if all_images.shape[-1] != imsize:
        all_images = _resize((imsize, imsize))(all_images).float()
    if all_recons.shape[-1] != imsize:
        all_recons = _resize((imsize, imsize))(all_recons).float()
    return all_images, all_recons


def _mindeye_pixcorr(all_images, all_recons):
    preprocess = transforms.Compose([_resize(425)])
    all_images_flattened = preprocess(all_images).reshape(len(all_images), -1).cpu()
    all_recons_flattened = preprocess(all_recons).view(len(all_recons), -1).cpu()
    return np.array([np.corrcoef(all_images_flattened[i], all_recons_flattened[i])[0][1]
                     for i in range(len(all_images))])


def _mindeye_ssim(all_images, all_recons):
    preprocess = transforms.Compose([_resize(425)])
    img_gray = rgb2gray(preprocess(all_images).permute((0, 2, 3, 1)).cpu())
    recon_gray = rgb2gray(preprocess(all_recons).permute((0, 2, 3, 1)).cpu())
    return np.array([structural_similarity(rec, im, multichannel=True, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=1.0)
                     for im, rec in zip(img_gray, recon_gray)])


@torch.no_grad()
def _mindeye_two_way_identification(all_recons, all_images, model, preprocess, feature_layer=None):
    """Their two_way_identification with return_avg=False: (success counts, n - 1)."""
    preds = model(torch.stack([preprocess(recon) for recon in all_recons], dim=0))
    reals = model(torch.stack([preprocess(indiv) for indiv in all_images], dim=0))
    if feature_layer is None:
        preds = preds.float().flatten(1).cpu().numpy()
        reals = reals.float().flatten(1).cpu().numpy()
    else:
        preds = preds[feature_layer].float().flatten(1).cpu().numpy()
        reals = reals[feature_layer].float().flatten(1).cpu().numpy()
    r = np.corrcoef(reals, preds)
    r = r[:len(all_images), len(all_images):]
    congruents = np.diag(r)
    success = r < congruents
    success_cnt = np.sum(success, 0)
    return success_cnt, len(all_images) - 1


@torch.no_grad()
def _mindeye_distance(all_images, all_recons, model, size):
    preprocess = transforms.Compose([_resize(size), transforms.Normalize(mean=_MEAN, std=_STD)])
    gt = model(preprocess(all_images))["avgpool"]
    gt = gt.reshape(len(gt), -1).cpu().numpy()
    fake = model(preprocess(all_recons))["avgpool"]
    fake = fake.reshape(len(fake), -1).cpu().numpy()
    return np.array([sp.spatial.distance.correlation(gt[i], fake[i]) for i in range(len(gt))])


def _seeded(build, seed=0):
    torch.manual_seed(seed)
    return build()


def _efficientnet():
    """EfficientNet-B1 with random weights that do not vanish: torchvision's own initialisation
    gives avgpool features of 1e-14, whose float32 correlation (scipy's, in MindEye's code)
    underflows; convolutions initialised for their fan-in give features of 1e-4."""
    model = _seeded(lambda: efficientnet_b1(weights=None))
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, mode="fan_in")
    return model.eval()


# ---------------------------------------------------------------- mindeye
@pytest.fixture(scope="module")
def pairs():
    return _pairs()


def test_mindeye_pixel_metrics_equal_mindeyes_code(pairs):
    gt, rec = pairs
    rep = M.ImageEvaluator(gt, protocol="mindeye", batch_size=4, progress=False).evaluate(rec, ("ssim", "pixcorr"))
    all_images, all_recons = _mindeye_inputs(gt, rec)
    theirs_r, theirs_s = _mindeye_pixcorr(all_images, all_recons), _mindeye_ssim(all_images, all_recons)
    np.testing.assert_allclose(rep.per_image["pixcorr"], theirs_r, rtol=0, atol=1e-6)
    np.testing.assert_allclose(rep.per_image["ssim"], theirs_s, rtol=0, atol=1e-6)
    assert rep.protocol == "mindeye" and rep.size == 425 and rep.ssim_mode == "2d"
    assert "256 torch-bilinear-plain" in rep.sources["ssim"]
    # and it is another number than Brain-Diffuser's chain gives the same pairs
    bd = M.ImageEvaluator(gt, ssim_mode="columns", progress=False).evaluate(rec, ("ssim", "pixcorr"))
    assert np.abs(bd.per_image["ssim"] - rep.per_image["ssim"]).max() > 0.01


@pytest.mark.filterwarnings("ignore:.*obtained by tracing the model in eval mode")  # Inception's aux head
def test_mindeye_feature_metrics_equal_mindeyes_code(pairs):
    gt, rec = pairs
    n = len(gt)
    all_images, all_recons = _mindeye_inputs(gt, rec)
    ours = [_seeded(lambda: F.alexnet_network(pretrained=False, protocol="mindeye")),
            _seeded(lambda: F.inception_network(pretrained=False, protocol="mindeye")),
            F._torch_network("efficientnet", _efficientnet(), {"avgpool": "efficientnet"}, "EfficientNet-B1 (test)",
                             False, None, protocol="mindeye"),
            _seeded(lambda: F.swav_network(False, protocol="mindeye"))]
    metrics = ("alexnet2", "alexnet5", "inceptionv3", "efficientnet", "swav")
    rep = M.ImageEvaluator(gt, networks=ours, protocol="mindeye", batch_size=n, progress=False).evaluate(rec, metrics)

    alex = create_feature_extractor(_seeded(lambda: alexnet(weights=None)), return_nodes=["features.4", "features.11"])
    alex.eval().requires_grad_(False)
    pre = transforms.Compose([_resize(256), transforms.Normalize(mean=_MEAN, std=_STD)])
    for metric, layer in (("alexnet2", "features.4"), ("alexnet5", "features.11")):
        counts, denom = _mindeye_two_way_identification(all_recons, all_images, alex, pre, layer)
        np.testing.assert_array_equal(np.rint(rep.per_image[metric] * denom).astype(int), counts)
        assert 0 < counts.sum() < n * denom  # neither trivial nor empty
    inc = create_feature_extractor(
        _seeded(lambda: inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=False)),
        return_nodes=["avgpool"])
    inc.eval().requires_grad_(False)
    pre = transforms.Compose([_resize(342), transforms.Normalize(mean=_MEAN, std=_STD)])
    counts, denom = _mindeye_two_way_identification(all_recons, all_images, inc, pre, "avgpool")
    np.testing.assert_array_equal(np.rint(rep.per_image["inceptionv3"] * denom).astype(int), counts)

    eff = create_feature_extractor(_efficientnet(), return_nodes=["avgpool"])
    eff.eval().requires_grad_(False)
    np.testing.assert_allclose(rep.per_image["efficientnet"], _mindeye_distance(all_images, all_recons, eff, 255),
                               rtol=0, atol=2e-6)
    swav = _seeded(lambda: resnet50(weights=None))
    swav.fc = torch.nn.Identity()  # torch.hub's facebookresearch/swav resnet50
    swav = create_feature_extractor(swav, return_nodes=["avgpool"])
    swav.eval().requires_grad_(False)
    np.testing.assert_allclose(rep.per_image["swav"], _mindeye_distance(all_images, all_recons, swav, 224),
                               rtol=0, atol=2e-6)


def test_mindeye_clip_equals_mindeyes_code(pairs):
    from transformers import CLIPConfig, CLIPModel

    gt, rec = pairs
    tower = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)
    cfg = CLIPConfig(text_config=dict(num_hidden_layers=1, **tower), projection_dim=16,
                     vision_config=dict(num_hidden_layers=2, image_size=224, patch_size=32, **tower))
    model = _seeded(lambda: CLIPModel(cfg)).eval()
    net = F.clip_network(model, description="tiny CLIP (test)", trained=False, protocol="mindeye")
    rep = M.ImageEvaluator(gt, networks=[net], protocol="mindeye", batch_size=len(gt), progress=False).evaluate(
        rec, ("clip",))
    all_images, all_recons = _mindeye_inputs(gt, rec)
    pre = transforms.Compose([_resize(224), transforms.Normalize(mean=list(F.CLIP_MEAN), std=list(F.CLIP_STD))])

    def encode_image(x):  # OpenAI CLIP's encode_image: the projected class token (float32 on the CPU)
        out = model.get_image_features(pixel_values=x)
        return out if torch.is_tensor(out) else out.pooler_output

    counts, denom = _mindeye_two_way_identification(all_recons, all_images, encode_image, pre, None)
    np.testing.assert_array_equal(np.rint(rep.per_image["clip"] * denom).astype(int), counts)
    assert "mindeye protocol input" in rep.sources["clip"]


def test_mindeye_efficientnet_takes_the_v2_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = F.efficientnet_network(pretrained=False, protocol="mindeye")
    assert net.features(_pairs(2)[0])["efficientnet"].shape == (2, 1280) and "mindeye protocol input" in net.description
    assert F.metric_asset("efficientnet", "mindeye") == "torchvision-efficientnet-v2"
    assert F.metric_asset("efficientnet") == "torchvision-metrics" == F.metric_asset("alexnet2", "mindeye")
    with pytest.raises(assets.MissingAssetError, match="torchvision-efficientnet-v2.*nsdlib fetch metrics"):
        F.efficientnet_network(protocol="mindeye")
    nets, unavailable = F.feature_networks("mini", metrics=("efficientnet",), protocol="mindeye")
    assert nets == [] and "torchvision-efficientnet-v2" in unavailable["efficientnet"]


def test_mindeye_refuses_the_column_ssim():
    gt, _ = _pairs(2)
    with pytest.raises(ValueError, match="'mindeye' computes the 2-D SSIM only; found ssim_mode='columns'"):
        M.ImageEvaluator(gt, protocol="mindeye", ssim_mode="columns")
    with pytest.raises(ValueError, match="protocol must be one of brain-diffuser, mindeye; found 'minday'"):
        M.ImageEvaluator(gt, protocol="minday")
    # a network built for one protocol never scores under the other
    with pytest.raises(ValueError, match="'alexnet' takes the 'brain-diffuser' protocol's input; this evaluator "
                                         "scores under 'mindeye'"):
        M.ImageEvaluator(gt, protocol="mindeye", networks=[F.alexnet_network(pretrained=False)])


# --------------------------------------------------------- brain-diffuser
def test_brain_diffuser_is_the_default_and_unchanged(pairs):
    """The default chain is Brain-Diffuser's: the reconstruction resized to the ground truth's size
    by Pillow's bicubic filter, rgb2gray, scikit-image's SSIM with the columns as channels."""
    gt, rec = pairs
    gt, rec = gt[:4], rec[:4]
    default = M.ImageEvaluator(gt, ssim_mode="columns", progress=False).evaluate(rec, ("ssim", "pixcorr"))
    named = M.ImageEvaluator(gt, ssim_mode="columns", protocol="brain-diffuser", progress=False).evaluate(
        rec, ("ssim", "pixcorr"))
    for m in ("ssim", "pixcorr"):
        np.testing.assert_array_equal(default.per_image[m], named.per_image[m])
    small = resize(rec, 425, filter="pil-bicubic")
    ref_s = [structural_similarity(rgb2gray(r / 255.0), rgb2gray(g / 255.0), channel_axis=-1, gaussian_weights=True,
                                   sigma=1.5, use_sample_covariance=False, data_range=1.0) for g, r in zip(gt, small)]
    ref_r = [np.corrcoef(g.ravel() / 255.0, r.ravel() / 255.0)[0, 1] for g, r in zip(gt, small)]
    np.testing.assert_allclose(default.per_image["ssim"], ref_s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(default.per_image["pixcorr"], ref_r, rtol=0, atol=1e-12)
    assert default.protocol == "brain-diffuser" and default.size == 425
    assert default.sources["ssim"].endswith("at 425x425")  # the sources read as before protocols
    # the feature input is one antialiased bilinear resize to 224, as before
    steps = P.BRAIN_DIFFUSER.feature_input("alexnet")
    assert steps == (P.Resize(224, "torch-bilinear"),)
    x = F._to_input(gt[:2], 224, F.IMAGENET_MEAN, F.IMAGENET_STD, torch.device("cpu"), steps)
    torch.testing.assert_close(x, F._to_input(gt[:2], 224, F.IMAGENET_MEAN, F.IMAGENET_STD, torch.device("cpu")),
                               rtol=0, atol=0)


# ------------------------------------------------------------------- cards
def _card(ids=(5, 9, 2), protocol="brain-diffuser", **kw):
    return P.protocol_card(protocol, image_set="test images", ids=np.asarray(ids), repeats="averaged", seed=0, **kw)


def test_card_digest_follows_the_ids():
    a = _card()
    assert a.ids_digest == _card().ids_digest and a.key == _card().key
    assert _card((5, 9, 3)).ids_digest != a.ids_digest  # another image
    assert _card((9, 5, 2)).ids_digest != a.ids_digest  # another order
    assert _card(protocol="mindeye").key != a.key and _card(protocol="mindeye").ids_digest == a.ids_digest
    assert P.ids_digest(np.array([5, 9, 2], dtype=np.int32)) == a.ids_digest  # the dtype does not matter
    assert P.ProtocolCard.from_dict(a.to_dict()) == a
    assert a.n_images == 3 and a.selection == "none" and a.samples_per_image == 1
    lines = "\n".join(_card(protocol="mindeye").lines())
    assert "mindeye (MindEye2's evaluation code)" in lines and "inceptionv3: 256 torch-bilinear-plain -> 342" in lines
    assert "IMAGENET1K_V2" in lines
    with pytest.raises(ValueError, match="1-D sequence of integers"):
        P.ids_digest(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="3 samples per image need a selection rule"):
        _card(samples_per_image=3)


def test_mixing_protocols_raises_naming_both():
    gt, rec = _pairs(3)
    gt, rec = gt[:, :64, :64], rec[:, :64, :64]
    bd = M.ImageEvaluator(gt, progress=False).evaluate(rec, ("pixcorr",))
    me = M.ImageEvaluator(gt, protocol="mindeye", progress=False).evaluate(rec, ("pixcorr",))
    assert P.check_same_protocol([bd, bd, {"protocol": "brain-diffuser"}, _card()]) == "brain-diffuser"
    with pytest.raises(P.ProtocolMismatchError, match="'brain-diffuser' and 'mindeye'"):
        M.compare_reports(bd, me)
    with pytest.raises(P.ProtocolMismatchError, match="rows of this table come from different evaluation "
                                                      "protocols: 'mindeye' and 'brain-diffuser'"):
        P.check_same_protocol([{"protocol": "mindeye"}, {"protocol": "brain-diffuser"}], "rows of this table")
    with pytest.raises(P.ProtocolMismatchError, match="a report and its card"):
        bd.with_card(_card(protocol="mindeye"))


def test_report_keeps_its_protocol_and_card():
    gt, rec = _pairs(3)
    gt, rec = gt[:, :64, :64], rec[:, :64, :64]
    rep = M.ImageEvaluator(gt, protocol="mindeye", progress=False).evaluate(rec, ("pixcorr",))
    rep = rep.with_card(_card((1, 2, 3), protocol="mindeye"))
    back = M.MetricReport.from_dict(rep.to_dict())
    assert back.protocol == "mindeye" and back.card == rep.card
    old = rep.to_dict()
    del old["protocol"], old["card"]  # a report cached before protocols existed: Brain-Diffuser's chain
    assert M.MetricReport.from_dict(old).protocol == "brain-diffuser" and M.MetricReport.from_dict(old).card is None
