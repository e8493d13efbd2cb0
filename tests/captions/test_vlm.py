"""Tests for histoflow.captions.vlm on a tiny LLaVA built here from configs, with random weights.

The tiny model is a real ``LlavaForConditionalGeneration`` (CLIP vision tower, Llama decoder)
with a byte-level BPE tokenizer trained on a few sentences, saved with ``save_pretrained`` and
loaded back by :class:`VLMCaptioner` through the same Auto* calls as MedGemma. Its captions are
gibberish, which is all these tests need: they check plumbing, batching and determinism.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from histoflow.captions.vlm import VLMCaptioner, model_revision
from tiny_vlm import PROMPT, build_tiny_vlm

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _image(height: int, width: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vlm") / "tiny"
    build_tiny_vlm(folder)
    return folder


@pytest.fixture(scope="module")
def captioner(tiny_vlm) -> VLMCaptioner:
    return VLMCaptioner(str(tiny_vlm), prompt=PROMPT, max_new_tokens=8, device="cpu")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch) -> Path:
    """An empty hub cache in offline mode: nothing can be downloaded."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variables at import, so set the parsed constants as well.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_captions_are_deterministic_strings(captioner, tiny_vlm):
    image = _image(40, 40)
    caption = captioner(image)
    assert isinstance(caption, str)
    assert caption == caption.strip()
    assert captioner(image.copy()) == caption
    # A fresh load of the same files generates the same words.
    again = VLMCaptioner(str(tiny_vlm), prompt=PROMPT, max_new_tokens=8, device="cpu")
    assert again(image) == caption


def test_batch_of_mixed_sizes_matches_one_by_one(captioner):
    images = [_image(32, 32, seed=1), _image(48, 40, "L", seed=2), _image(70, 64, "RGBA", seed=3)]
    batch = captioner.caption_batch(images)
    assert all(isinstance(caption, str) for caption in batch) and any(batch)
    assert batch == [captioner(image) for image in images]
    assert captioner.caption_batch([]) == []


def test_prompt_uses_the_chat_template(captioner):
    assert captioner._text == f"<s>USER: <image>\n{PROMPT}\nASSISTANT:"
    assert captioner.processor.tokenizer.padding_side == "left"


def test_without_chat_template_falls_back_to_a_plain_prompt(tiny_vlm, tmp_path):
    folder = shutil.copytree(tiny_vlm, tmp_path / "plain")
    (folder / "chat_template.jinja").unlink()
    plain = VLMCaptioner(str(folder), prompt=PROMPT, max_new_tokens=4, device="cpu")
    assert plain._text == f"<image>\n{PROMPT}"
    assert isinstance(plain(_image(32, 32)), str)


def test_model_id_and_local_revision_follow_the_files(captioner, tiny_vlm, tmp_path):
    assert captioner.model_id == str(tiny_vlm)
    assert re.fullmatch(r"[0-9a-f]{64}", captioner.revision)
    # Content, not location: a copy has the same revision, changed weights another.
    copy = shutil.copytree(tiny_vlm, tmp_path / "copy")
    assert model_revision(str(copy)) == captioner.revision
    weights = load_file(copy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1.0
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert model_revision(str(copy)) != captioner.revision


def test_hub_id_loads_from_the_offline_cache_at_its_commit(tiny_vlm, offline_hub):
    # The layout huggingface_hub writes: refs/main names the commit, snapshots/<commit> the files.
    repo = offline_hub / "models--histoflow-tests--tiny-vlm"
    shutil.copytree(tiny_vlm, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)

    hub = VLMCaptioner("histoflow-tests/tiny-vlm", prompt=PROMPT, max_new_tokens=4, device="cpu")
    assert hub.model_id == "histoflow-tests/tiny-vlm"
    assert hub.revision == COMMIT
    assert isinstance(hub(_image(32, 32)), str)
    assert model_revision("histoflow-tests/not-cached", "v1.0") == "v1.0"


@pytest.mark.parametrize("model", ["missing-folder", "histoflow-tests/no-such-model"])
def test_missing_model_says_how_to_provide_it(model, tmp_path, offline_hub):
    name = str(tmp_path / model) if model == "missing-folder" else model
    with pytest.raises(RuntimeError, match="huggingface-cli login") as error:
        VLMCaptioner(name, prompt=PROMPT)
    assert "captions.backend: morphology" in str(error.value)
    assert "captions.model" in str(error.value)
