"""nsdlib.clip on small randomly initialised CLIPs of the real transformers classes."""

import numpy as np
import pytest
import torch

from nsdlib import assets
from nsdlib.clip import (
    N_TEXT_TOKENS,
    N_VISION_TOKENS,
    ClipEmbedder,
    random_clip,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: one thread avoids OpenMP spin-waiting on a shared 2-core machine
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)



@pytest.fixture(scope="module")
def emb():
    return random_clip(projection_dim=24, hidden_size=32, seed=1)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 80, 96, 3), dtype=np.uint8)


CAPTIONS = [["a red circle on grass", "one red circle"], ["two blue squares"], ["a small green star", "a star",
                                                                                  "green star on sand"]]


def _eot_positions(emb, captions):
    ids = emb.tokenizer(captions, padding="max_length", max_length=N_TEXT_TOKENS, truncation=True,
                        return_tensors="pt").input_ids
    return ids, (ids == emb.tokenizer.eos_token_id).int().argmax(1)


def test_shapes_follow_the_model(emb, images):
    assert emb.text(CAPTIONS, progress=False).shape == (3, N_TEXT_TOKENS, 24)
    assert emb.vision(images, progress=False).shape == (3, N_VISION_TOKENS, 24)
    assert emb.dim == 24 and emb.n_vision_tokens == 257
    assert emb.text(CAPTIONS, progress=False).dtype == np.float32


def test_end_of_text_token_has_unit_norm_and_is_the_models_pooled_token(emb):
    caps = ["a red circle on grass", "two blue squares", ""]
    out = emb.text([[c] for c in caps], progress=False)
    ids, eot = _eot_positions(emb, caps)
    norms = np.linalg.norm(out[np.arange(3), eot.numpy()], axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    # the model's own pooled, projected text embedding points the same way as our EOT token
    with torch.no_grad():
        pooled = emb.model.text_projection(emb.model.text_model(input_ids=ids).pooler_output)
    pooled = (pooled / pooled.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(out[np.arange(3), eot.numpy()], pooled, atol=1e-5)
    # other tokens are not unit norm (the division is by one shared norm per caption)
    assert not np.allclose(np.linalg.norm(out[0, 1], axis=-1), 1.0, atol=1e-3)


def test_captions_are_averaged_after_normalisation(emb):
    both = emb.text([["a red circle", "two blue squares"]], progress=False)[0]
    one = emb.text([["a red circle"], ["two blue squares"]], progress=False)
    np.testing.assert_allclose(both, one.mean(0), atol=1e-6)
    # a bare string per image is one caption
    np.testing.assert_allclose(emb.text(["a red circle"], progress=False)[0], one[0], atol=1e-6)


def test_class_token_unit_norm_equals_projected_pooled_output(emb, images):
    out = emb.vision(images, progress=False)
    np.testing.assert_allclose(np.linalg.norm(out[:, 0], axis=-1), 1.0, atol=1e-5)
    with torch.no_grad():
        pv = emb.pixel_values(images)
        pooled = emb.model.visual_projection(emb.model.vision_model(pixel_values=pv).pooler_output)
    pooled = (pooled / pooled.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(out[:, 0], pooled, atol=1e-5)  # post_layernorm applied to the class token


def test_patch_tokens_get_post_layernorm_and_projection(emb, images):
    out = emb.vision(images[:1], progress=False)[0]
    with torch.no_grad():
        hidden = emb.model.vision_model(pixel_values=emb.pixel_values(images[:1])).last_hidden_state[0]
        ln = emb.model.vision_model.post_layernorm
        want = emb.model.visual_projection(ln(hidden))
        skipped = emb.model.visual_projection(hidden)  # the mistake of forgetting post_layernorm
    want = (want / want[0].norm()).numpy()
    np.testing.assert_allclose(out, want, atol=1e-5)
    skipped = (skipped / skipped[0].norm()).numpy()
    assert np.abs(out[1:] - skipped[1:]).max() > 1e-2


def test_unit_float_images_are_not_rescaled_twice(emb, images):
    as_uint8 = emb.vision(images, progress=False)
    as_float = emb.vision(images.astype(np.float32) / 255.0, progress=False)
    np.testing.assert_array_equal(as_uint8, as_float)
    # known answer: a uniform 0.5 image at the crop size becomes (0.5 - mean) / std exactly
    s = emb.image_size
    pv = emb.pixel_values(np.full((1, s, s, 3), 0.5, np.float32))[0]
    mean = torch.tensor(emb.image_processor.image_mean)[:, None, None]
    std = torch.tensor(emb.image_processor.image_std)[:, None, None]
    torch.testing.assert_close(pv, ((0.5 - mean) / std).expand_as(pv))
    # the pitfall this avoids: the processor's default rescales the 0-1 image by 1/255 again
    naive = emb.image_processor(images=torch.full((1, 3, s, s), 0.5), return_tensors="pt").pixel_values[0]
    assert (naive - pv).abs().max() > 1.0


def test_bad_images_are_refused(emb):
    with pytest.raises(ValueError, match="0-1"):
        emb.vision(np.full((1, 64, 64, 3), 200.0, np.float32), progress=False)
    with pytest.raises(ValueError, match=r"\(n, height, width, 3\)"):
        emb.vision(np.zeros((64, 64, 3), np.uint8), progress=False)
    with pytest.raises(ValueError, match="dtype"):
        emb.vision(np.zeros((1, 64, 64, 3), np.int32), progress=False)
    with pytest.raises(ValueError, match="no captions"):
        emb.text([["a"], []], progress=False)


def test_batching_does_not_change_results(emb, images):
    one = random_clip(projection_dim=24, hidden_size=32, seed=1)
    one.batch_size = 1
    np.testing.assert_allclose(one.vision(images, progress=False), emb.vision(images, progress=False), atol=1e-5)
    np.testing.assert_allclose(one.text(CAPTIONS, progress=False), emb.text(CAPTIONS, progress=False), atol=1e-5)


def test_unconditional_contexts(emb):
    text, vision = emb.unconditional()
    assert text.shape == (N_TEXT_TOKENS, 24) and vision.shape == (N_VISION_TOKENS, 24)
    np.testing.assert_allclose(text, emb.text([[""]], progress=False)[0])
    grey = np.full((1, 9, 9, 3), 0.5, np.float32)  # any size: resizing keeps a uniform image uniform
    np.testing.assert_allclose(vision, emb.vision(grey, progress=False)[0], atol=1e-5)


def test_save_and_load_round_trip(emb, images, tmp_path):
    emb.save_pretrained(tmp_path / "clip")
    back = ClipEmbedder.from_pretrained(tmp_path / "clip")
    np.testing.assert_allclose(back.vision(images, progress=False), emb.vision(images, progress=False), atol=1e-6)
    np.testing.assert_allclose(back.text(CAPTIONS, progress=False), emb.text(CAPTIONS, progress=False), atol=1e-6)


def test_missing_pretrained_clip_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NSDLIB_ASSETS", str(tmp_path))
    with pytest.raises(assets.MissingAssetError, match="nsdlib fetch clip"):
        ClipEmbedder.from_pretrained()
    with pytest.raises(FileNotFoundError, match="config.json"):
        ClipEmbedder.from_pretrained(tmp_path)


def test_text_tower_must_have_77_positions():
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from nsdlib.clip import byte_level_tokenizer

    tok = byte_level_tokenizer()
    cfg = CLIPConfig(text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                      num_attention_heads=1, max_position_embeddings=32),
                     vision_config=dict(image_size=16, patch_size=4, hidden_size=16, intermediate_size=16,
                                        num_hidden_layers=1, num_attention_heads=1))
    with pytest.raises(ValueError, match="77 positions"):
        ClipEmbedder(CLIPModel(cfg), tok, CLIPImageProcessor())
