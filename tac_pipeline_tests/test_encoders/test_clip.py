"""The CLIP encoder: tac-tiny determinism, the prompt ensemble, the trimmed text path, weights and their errors.

Nothing here reaches the network: HF_HUB_OFFLINE is set, caches point at empty temporary folders, and the one
test that lets the encoder try the network points it at a closed local port.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from tac_pipeline.encoders import (
    NOUN_TEMPLATES,
    TINY_MODEL_NAME,
    ClipEncoder,
    EncoderUnavailableError,
)
from tac_pipeline.encoders import clip as clip_module
from tac_pipeline.encoders.clip.text_tower import encode_text_trimmed, trim_supported
from tac_pipeline.encoders.clip.tokens import PromptTokens
from tac_pipeline_tests.test_encoders.oddfiles import noise

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_CONFIG = clip_module.MODEL_CONFIG_DIR / "tac-tiny.json"
TRICKY_NOUNS = [
    "dog",
    "hot dog",
    "Saint Bernard",
    "jack-o'-lantern",
    "o'brien",
    "A.D.",
    "st. john's wort",
    "4-H club",
    "10",
    "U.S.",
    "rock 'n' roll",
    "café au lait",
    "AT&T",
    "&amp",
    "x&lt;y",
    "  spaced  out  ",
    "a/b",
    "C++",
    "?",
    "",
    "yes" * 40,
    " ".join(["word"] * 90),
]


@pytest.fixture(scope="module")
def tiny() -> ClipEncoder:
    return ClipEncoder.from_pretrained(TINY_MODEL_NAME, device="cpu")


def _stock_text_features(encoder: ClipEncoder, texts: list[str]) -> torch.Tensor:
    """Raw features straight from open_clip: full 77-token rows through ``model.encode_text``."""
    with torch.inference_mode():
        return encoder.model.encode_text(encoder.tokenizer(texts)).float()


# ------------------------------------------------------------------------------------------------------------
# tac-tiny
# ------------------------------------------------------------------------------------------------------------


def test_tiny_model_is_registered_and_needs_no_weights(tiny):
    assert TINY_MODEL_NAME in open_clip.list_models()
    cfg = json.loads(TINY_CONFIG.read_text())
    assert tiny.embedding_dim == cfg["embed_dim"] == 64
    assert tiny.context_length == 77 and tiny.image_size == 64
    assert tiny.pretrained is None and tiny.identity["weights_sha256"] is None
    # the default tag ("openai") is not demanded for tac-tiny, and "none"/"" mean the same
    assert ClipEncoder.from_pretrained(TINY_MODEL_NAME, "none", device="cpu").identity == tiny.identity
    assert ClipEncoder.from_pretrained(TINY_MODEL_NAME, "", device="cpu").identity == tiny.identity
    # registration is idempotent
    clip_module.register_model_configs()
    clip_module.register_model_configs()
    assert open_clip.list_models().count(TINY_MODEL_NAME) == 1


def test_the_constructor_takes_built_parts_and_names_the_factory_for_a_model_name(tiny):
    from tac_pipeline.encoders.clip.loading import load_open_clip

    loaded = load_open_clip(TINY_MODEL_NAME, None)
    built = ClipEncoder(
        loaded.model,
        loaded.preprocess,
        loaded.tokenizer,
        model_name=loaded.model_name,
        weights_sha256=loaded.weights_sha256,
        device="cpu",
    )
    assert built.identity == tiny.identity
    np.testing.assert_array_equal(built.encode_texts(["a dog"]), tiny.encode_texts(["a dog"]))
    with pytest.raises(TypeError, match=r"ClipEncoder\.from_pretrained\('tac-tiny'"):
        ClipEncoder(TINY_MODEL_NAME, device="cpu")


def test_tiny_embeddings_are_deterministic_normalised_and_of_the_configured_width(tiny):
    other = ClipEncoder.from_pretrained(TINY_MODEL_NAME, device="cpu")
    images = [noise((40, 30), seed=s) for s in range(5)]
    texts = ["a photo of a dog", "a cat", "", "x" * 500]
    for enc in (tiny, other):
        img, txt = enc.encode_images(images), enc.encode_texts(texts)
        assert img.dtype == txt.dtype == np.float32
        assert img.shape == (5, 64) and txt.shape == (4, 64)
        np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(tiny.encode_images(images), other.encode_images(images))
    np.testing.assert_array_equal(tiny.encode_texts(texts), other.encode_texts(texts))
    assert not np.allclose(tiny.encode_images(images)[0], tiny.encode_images(images)[1])  # not degenerate


def test_tiny_weights_are_identical_in_another_process(tiny):
    code = (
        "import hashlib, torch\n"
        "from tac_pipeline.encoders import ClipEncoder\n"
        "m = ClipEncoder.from_pretrained('tac-tiny', device='cpu').model\n"
        "h = hashlib.sha256()\n"
        "for k, v in sorted(m.state_dict().items()): h.update(k.encode()); h.update(v.numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    h = hashlib.sha256()
    for k, v in sorted(tiny.model.state_dict().items()):
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    assert out.stdout.strip().splitlines()[-1] == h.hexdigest()


def test_building_the_encoder_leaves_the_global_rng_alone():
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    ClipEncoder.from_pretrained(TINY_MODEL_NAME, device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_image_inputs_agree_whatever_their_form(tiny):
    images = [noise((50, 20), seed=1), noise((7, 9), seed=2)]
    from_pil = tiny.encode_images(images)
    floats = torch.stack([tiny.preprocess(im) for im in images])
    np.testing.assert_array_equal(tiny.encode_images(floats), from_pil)
    spec = tiny.preprocess_spec
    uint8 = torch.stack([torch.from_numpy(spec.to_uint8_chw(im)) for im in images])
    np.testing.assert_array_equal(tiny.encode_images(uint8), from_pil)
    with torch.inference_mode():
        stock = F.normalize(tiny.model.encode_image(floats), dim=-1).numpy()
    np.testing.assert_allclose(from_pil, stock, atol=1e-6)
    assert tiny.encode_images([]).shape == (0, 64)


# ------------------------------------------------------------------------------------------------------------
# texts: the trimmed context and the prompt ensemble
# ------------------------------------------------------------------------------------------------------------


def test_trimmed_context_equals_stock_encode_text(tiny):
    assert tiny.uses_trimmed_text_context
    texts = ["a dog", "a photo of the large hot dog.", "", "art " * 100, "itap of a café au lait."]
    tokens = tiny.tokenizer(texts)
    with torch.inference_mode():
        stock = tiny.model.encode_text(tokens)
        longest = int((tokens != 0).sum(dim=1).max())
        trimmed = encode_text_trimmed(tiny.model, tokens[:, :longest])
    assert longest < 77 or texts[3]  # the long text keeps all 77
    torch.testing.assert_close(trimmed, stock, atol=1e-5, rtol=1e-5)
    # and through the public API (sorted, trimmed batches)
    np.testing.assert_allclose(
        tiny.encode_texts(texts), F.normalize(stock, dim=-1).numpy(), atol=1e-5, rtol=1e-5
    )


def test_texts_are_truncated_to_the_context_like_open_clip(tiny):
    long_text = "one two three " * 60
    np.testing.assert_allclose(
        tiny.encode_texts([long_text]),
        F.normalize(_stock_text_features(tiny, [long_text]), dim=-1).numpy(),
        atol=1e-5,
    )


def test_trim_is_refused_where_it_would_not_be_exact():
    enc = ClipEncoder.from_pretrained(
        TINY_MODEL_NAME, device="cpu"
    )  # a private instance: its model gets modified
    model, tokenizer = enc.model, enc.tokenizer
    assert trim_supported(model, tokenizer)
    model.text_pool_type = "last"  # pools a padding position
    assert not trim_supported(model, tokenizer)
    model.text_pool_type = "argmax"
    mask = model.attn_mask
    model.attn_mask = torch.zeros_like(mask)  # bidirectional: padding would be attended to
    assert not trim_supported(model, tokenizer)
    model.attn_mask = None
    assert not trim_supported(model, tokenizer)
    model.attn_mask = mask
    assert trim_supported(model, tokenizer)
    assert not trim_supported(model, object())  # not open_clip's SimpleTokenizer


def test_the_stock_path_gives_the_same_numbers(tiny, monkeypatch):
    texts = ["a dog", "a photo of the small cat."]
    trimmed = tiny.encode_texts(texts)
    nouns = tiny.encode_nouns(["dog", "cat"])
    monkeypatch.setattr(tiny, "_trim", False)
    np.testing.assert_allclose(tiny.encode_texts(texts), trimmed, atol=1e-5)
    np.testing.assert_allclose(tiny.encode_nouns(["dog", "cat"]), nouns, atol=1e-5)


def test_noun_templates_are_the_spec_ones():
    assert NOUN_TEMPLATES == (
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    )


def test_prompt_ensemble_is_the_normalised_mean_of_raw_template_features(tiny):
    nouns = ["dog", "hot dog", "jack-o'-lantern", "café au lait", "AT&T", "yes" * 40]
    got = tiny.encode_nouns(nouns)
    assert got.shape == (len(nouns), 64) and got.dtype == np.float32
    for i, noun in enumerate(nouns):
        raw = _stock_text_features(tiny, [t.format(noun) for t in NOUN_TEMPLATES])  # (7, d), unnormalised
        expected = F.normalize(raw.mean(dim=0), dim=-1).numpy()
        np.testing.assert_allclose(got[i], expected, atol=1e-5)
        # ... which is not the mean of the normalised features
    per_template = F.normalize(_stock_text_features(tiny, [t.format("dog") for t in NOUN_TEMPLATES]), dim=-1)
    assert not np.allclose(got[0], F.normalize(per_template.mean(dim=0), dim=-1).numpy(), atol=1e-4)


def test_composed_prompt_tokens_equal_tokenizing_each_prompt(tiny):
    prompts = PromptTokens(tiny.tokenizer, TRICKY_NOUNS, NOUN_TEMPLATES, 77)
    assert len(prompts) == len(TRICKY_NOUNS) * len(NOUN_TEMPLATES)
    assert prompts.full, "unsafe nouns must fall back to full tokenisation"
    assert len(prompts.full) < len(prompts)  # and safe ones are composed
    ks = np.arange(len(prompts))
    rows = prompts.rows(ks)
    texts = [t.format(n) for n in TRICKY_NOUNS for t in NOUN_TEMPLATES]
    reference = tiny.tokenizer(texts)
    for k, row in enumerate(rows):
        ref = reference[k]
        length = int(torch.nonzero(ref).flatten()[-1]) + 1
        assert row == ref[:length].tolist(), texts[k]
        assert prompts.lengths[k] == len(row)


def test_nouns_progress_and_empty_input(tiny):
    calls = []
    tiny.encode_nouns(["a", "b", "c"], progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (21, 21)
    assert tiny.encode_nouns([]).shape == (0, 64)
    assert tiny.encode_texts([]).shape == (0, 64)
    one_template = tiny.encode_nouns(["dog"], templates=["a photo of a {}."])
    np.testing.assert_allclose(one_template, tiny.encode_texts(["a photo of a dog."]), atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# weights: checkpoints and the one error
# ------------------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_embeddings(tiny, tmp_path):
    from safetensors.torch import save_file

    images = [noise((30, 30), seed=9)]
    texts = ["a photo of a dog"]
    # perturb the weights so that loading them visibly matters
    state = {
        k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
        for k, v in tiny.model.state_dict().items()
    }
    torch.save(state, tmp_path / "tiny.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "tiny.safetensors"))
    from_pt = ClipEncoder.from_pretrained(TINY_MODEL_NAME, checkpoint=tmp_path / "tiny.pt", device="cpu")
    from_st = ClipEncoder.from_pretrained(
        TINY_MODEL_NAME, checkpoint=str(tmp_path / "tiny.safetensors"), device="cpu"
    )
    reference = ClipEncoder.from_pretrained(TINY_MODEL_NAME, device="cpu")
    reference.model.load_state_dict(state)
    for enc in (from_pt, from_st):
        np.testing.assert_array_equal(enc.encode_images(images), reference.encode_images(images))
        np.testing.assert_array_equal(enc.encode_texts(texts), reference.encode_texts(texts))
    assert not np.allclose(from_pt.encode_texts(texts), tiny.encode_texts(texts))
    assert (
        from_pt.identity["weights_sha256"] == hashlib.sha256((tmp_path / "tiny.pt").read_bytes()).hexdigest()
    )
    assert from_pt.identity["checkpoint"] == str(tmp_path / "tiny.pt")
    assert (
        from_pt.identity != tiny.identity and from_pt.identity["checkpoint"] != from_st.identity["checkpoint"]
    )


def _assert_remedies(message: str, model: str) -> None:
    assert repr(model) in message
    assert "checkpoint=" in message and "'tac-tiny'" in message and "Looked in:" in message


def test_missing_weights_offline_fail_fast_with_the_remedies(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1, as read
    cache = tmp_path / "empty_cache"
    cache.mkdir()
    start = time.monotonic()
    with pytest.raises(EncoderUnavailableError) as info:
        ClipEncoder.from_pretrained("ViT-B-32", "openai", cache_dir=cache, device="cpu")
    assert time.monotonic() - start < 5
    message = str(info.value)
    _assert_remedies(message, "ViT-B-32")
    assert "'openai'" in message and str(cache) in message and "HF_HUB_OFFLINE" in message
    assert "timm/vit_base_patch32_clip_224.openai" in message
    assert isinstance(info.value, RuntimeError) and info.value.looked_in.startswith("Hugging Face cache")
    assert list(cache.iterdir()) == []  # nothing written


def test_unreachable_hub_fails_fast_without_offline_mode(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # HF_ENDPOINT as read; nothing listens
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    start = time.monotonic()
    with pytest.raises(EncoderUnavailableError, match="cannot be reached") as info:
        ClipEncoder.from_pretrained(
            "ViT-B-32", "openai", cache_dir=tmp_path, device="cpu", download_timeout=1.0
        )
    assert time.monotonic() - start < 5
    _assert_remedies(str(info.value), "ViT-B-32")


def test_unknown_tag_lists_the_valid_ones(tmp_path):
    with pytest.raises(EncoderUnavailableError) as info:
        ClipEncoder.from_pretrained("ViT-B-32", "no_such_tag", cache_dir=tmp_path, device="cpu")
    assert "laion2b_s34b_b79k" in str(info.value) and "openai" in str(info.value)
    _assert_remedies(str(info.value), "ViT-B-32")


def test_unknown_model_is_the_same_error():
    with pytest.raises(EncoderUnavailableError, match="unknown model") as info:
        ClipEncoder.from_pretrained("ViT-B-33", "openai", device="cpu")
    assert "ViT-B-32" in str(info.value)  # a close match is suggested


def test_missing_checkpoint_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(EncoderUnavailableError, match="does not exist") as info:
        ClipEncoder.from_pretrained("ViT-B-32", "openai", checkpoint=missing, device="cpu")
    assert str(missing) in str(info.value)
    _assert_remedies(str(info.value), "ViT-B-32")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_checkpoint(tmp_path, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(os.urandom(256))
    with pytest.raises(EncoderUnavailableError, match="corrupt") as info:
        ClipEncoder.from_pretrained(TINY_MODEL_NAME, checkpoint=bad, device="cpu")
    assert str(bad) in str(info.value)


class Payload:
    """An arbitrary object: a weights_only load must refuse to unpickle it."""


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path, tiny):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": tiny.model.state_dict(), "payload": Payload()}, path)
    with pytest.raises(EncoderUnavailableError, match="refusing to unpickle"):
        ClipEncoder.from_pretrained(TINY_MODEL_NAME, checkpoint=path, device="cpu")


def test_checkpoint_of_another_architecture_is_refused(tmp_path, tiny):
    state = dict(tiny.model.state_dict())
    state["text_projection"] = torch.zeros(64, 32)
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(EncoderUnavailableError, match="does not fit"):
        ClipEncoder.from_pretrained(TINY_MODEL_NAME, checkpoint=tmp_path / "other.pt", device="cpu")


def test_precision_and_device_settings():
    enc = ClipEncoder.from_pretrained(TINY_MODEL_NAME, device="auto")
    assert enc.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert enc.precision == ("fp16" if torch.cuda.is_available() else "fp32")
    with pytest.raises(ValueError):
        ClipEncoder.from_pretrained(TINY_MODEL_NAME, device="cpu", precision="fp16")
    bf16 = ClipEncoder.from_pretrained(TINY_MODEL_NAME, device="cpu", precision="bf16")
    out = bf16.encode_texts(["a dog"])
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert bf16.identity["precision"] == "bf16" and bf16.identity != enc.identity
