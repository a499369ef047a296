"""Known-answer tests of nsdlib.images: one check, one resize (each filter as its library), conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nsdlib.images import FILTERS, check_images, resize, to_tensor, to_uint8, to_unit_float

torch.set_num_threads(1)  # 2 threads spin-wait on a shared 2-core machine


def _images(n=3, h=20, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------- check
def test_check_returns_the_same_object():
    x = _images()
    assert check_images(x) is x
    assert check_images(x.astype(np.float32), uint8=False).dtype == np.float32
    assert check_images(x, size=20) is x
    assert isinstance(check_images(x.tolist(), uint8=False), np.ndarray)  # array-likes become arrays


def test_check_errors_name_expected_and_found():
    x = _images()
    with pytest.raises(ValueError, match=r"ground truth: expected uint8 images of shape \(n, height, width, 3\) "
                                         r"in 0-255; found float32 array of shape \(3, 20, 20, 3\)"):
        check_images(x.astype(np.float32), "ground truth")
    with pytest.raises(ValueError, match=r"found uint8 array of shape \(20, 20, 3\)"):
        check_images(x[0])
    with pytest.raises(ValueError, match=r"found uint8 array of shape \(3, 20, 20, 4\)"):
        check_images(np.zeros((3, 20, 20, 4), np.uint8))
    with pytest.raises(ValueError, match=r"expected images of shape \(n, 8, 8, 3\); found uint8"):
        check_images(x, uint8=False, size=8)


# ------------------------------------------------------------------ resize
@pytest.mark.parametrize("filter", FILTERS)
def test_resize_to_the_same_size_is_identity(filter):
    x = _images()
    assert resize(x, 20, filter=filter) is x
    if filter != "pil-bicubic":
        t = to_tensor(x)
        assert resize(t, 20, filter=filter) is t


def test_pil_bicubic_is_pillow():
    x = _images(2, 30, 30)
    out = resize(x, 13, filter="pil-bicubic")
    assert out.shape == (2, 13, 13, 3) and out.dtype == np.uint8
    for im, got in zip(x, out):
        np.testing.assert_array_equal(got, np.asarray(Image.fromarray(im).resize((13, 13), Image.BICUBIC)))


@pytest.mark.parametrize("filter,mode,aa", [("torch-bilinear", "bilinear", True), ("torch-bicubic", "bicubic", True),
                                            ("torch-bilinear-plain", "bilinear", False)])
def test_torch_filters_are_torch_interpolate(filter, mode, aa):
    x = _images(5, 24, 24)
    # uint8 in: resized as 0-255 floats, rounded back to uint8, in batches
    out = resize(x, 11, filter=filter, batch_size=2)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2).float(), size=(11, 11),
                                          mode=mode, antialias=aa, align_corners=False)
    ref = ref.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(out, ref)
    # tensor in: unrounded, bicubic clamped to 0-1
    t = to_tensor(x)
    ref_t = torch.nn.functional.interpolate(t, size=(37, 37), mode=mode, antialias=aa, align_corners=False)
    if mode == "bicubic":
        assert ref_t.min() < 0 or ref_t.max() > 1  # bicubic overshoots on random pixels...
        ref_t = ref_t.clamp(0, 1)  # ...and is clamped
    torch.testing.assert_close(resize(t, 37, filter=filter), ref_t, rtol=0, atol=0)


def test_resize_keeps_a_constant_image():
    x = np.full((2, 16, 16, 3), 77, np.uint8)
    for f in FILTERS:
        np.testing.assert_array_equal(resize(x, 9, filter=f), 77)


def test_resize_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="filter must be one of pil-bicubic, torch-bicubic, torch-bilinear, "
                                         "torch-bilinear-plain; found 'bicubic'"):
        resize(_images(), 8, filter="bicubic")
    with pytest.raises(ValueError, match="not tensors"):
        resize(to_tensor(_images()), 8, filter="pil-bicubic")
    with pytest.raises(ValueError, match="uint8"):
        resize(_images().astype(np.float32), 8, filter="pil-bicubic")


# ------------------------------------------------------------- conversions
def test_tensor_round_trip_is_exact():
    x = _images()
    t = to_tensor(x)
    assert t.shape == (3, 3, 20, 20) and t.dtype == torch.float32
    assert float(t.min()) >= 0 and float(t.max()) <= 1
    np.testing.assert_array_equal(to_uint8(t), x)
    np.testing.assert_array_equal(to_uint8(t * 2 - 1, value_range=(-1, 1)), x)


def test_to_uint8_clamps_and_rounds():
    t = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    np.testing.assert_array_equal(to_uint8(t)[0, 0, :, 0], [0, 0, 128, 255, 255])
    np.testing.assert_array_equal(to_uint8(t * 2 - 1, value_range=(-1, 1))[0, 0, :, 0], [0, 0, 128, 255, 255])
    with pytest.raises(ValueError, match=r"value_range must be \(0, 1\) or \(-1, 1\); found \(0, 255\)"):
        to_uint8(t, value_range=(0, 255))


def test_to_unit_float():
    x = _images()
    np.testing.assert_array_equal(to_unit_float(x), x.astype(np.float32) / 255)
    half = np.full((1, 4, 4, 3), 0.5)
    assert to_unit_float(half).dtype == np.float32 and float(to_unit_float(half).max()) == 0.5
    with pytest.raises(ValueError, match="must be in 0-1; found values from 0 to 200"):
        to_unit_float(np.where(half > 0, 200.0, 0.0).astype(np.float32) * np.eye(4)[None, :, :, None])
    with pytest.raises(ValueError, match="NaN"):
        to_unit_float(np.full((1, 4, 4, 3), np.nan))
    with pytest.raises(ValueError, match="found dtype int32"):
        to_unit_float(x.astype(np.int32))
