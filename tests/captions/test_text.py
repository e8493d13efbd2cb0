"""Caption text encoder: the bundled MiniLM (hash-checked), any local encoder, the cache."""

from __future__ import annotations

import pytest
import torch

from histoflow.captions import text as text_module
from histoflow.captions.text import BUNDLED_SHA256, TextEncoder, bundled_model_dir
from histoflow.captions.text_cache import encode_cached


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    """A 2-layer BERT built from a config, with the bundled tokenizer, saved locally."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir(), local_files_only=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_bundled_encoder_gives_real_sentence_embeddings():
    encoder = TextEncoder(max_tokens=24)
    emb = encoder.encode(
        [
            "densely cellular tissue with large pleomorphic nuclei",
            "crowded large irregular nuclei, densely cellular",
            "empty white fat cells with thin membranes",
        ]
    )
    assert emb.tokens.shape == (3, 24, 384) and emb.pooled.shape == (3, 384)
    sim = emb.pooled @ emb.pooled.T
    assert sim[0, 1] > sim[0, 2]  # related captions are closer: real weights, not random
    assert not emb.tokens[~emb.mask].any()  # padding is zeroed


def test_captions_longer_than_max_tokens_are_counted():
    encoder = TextEncoder(max_tokens=8)  # [CLS] + 6 word pieces + [SEP] fit
    short, long = "empty white fat cells", "densely cellular tissue with large pleomorphic nuclei"
    assert encoder.n_truncated([]) == encoder.n_truncated([short]) == 0
    assert encoder.n_truncated([short, long, long]) == 2


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_a_caption_embeds_the_same_alone_or_in_any_batch(precision):
    """Fixed-shape forward passes: under bf16 too, other captions in a batch change nothing."""
    encoder = TextEncoder(max_tokens=24, precision=precision)
    texts = [
        f"{'densely cellular ' * (i % 4)}tissue {i} with pleomorphic nuclei" for i in range(40)
    ]
    together = encoder.encode(texts)
    for i in (0, 1, 33):
        alone = encoder.encode([texts[i]])
        assert torch.equal(together.tokens[i], alone.tokens[0]), i
        assert torch.equal(together.pooled[i], alone.pooled[0]), i
        assert torch.equal(together.mask[i], alone.mask[0]), i
    assert not together.tokens[~together.mask].any()


def test_bf16_text_embeddings_match_fp32_closely():
    texts = ["densely cellular tissue with large pleomorphic nuclei", "empty white fat cells"]
    fp32 = TextEncoder(max_tokens=24, precision="32")
    bf16 = TextEncoder(max_tokens=24, precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    cos = torch.nn.functional.cosine_similarity(
        fp32.encode(texts).pooled, bf16.encode(texts).pooled
    )
    assert cos.min() > 0.999, cos


def test_tampered_weights_are_refused(tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"not the official weights")
    with pytest.raises(RuntimeError, match="does not match the pinned"):
        text_module._check_sha256(fake, BUNDLED_SHA256)


def test_any_local_encoder_loads_through_the_same_path(tiny_encoder_dir):
    encoder = TextEncoder(str(tiny_encoder_dir), max_tokens=12)
    emb = encoder.encode(["a tile", "another tile"])
    assert encoder.dim == 16 and emb.tokens.shape == (2, 12, 16)


def test_missing_encoder_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="local folder path"):
        TextEncoder(str(tmp_path / "nowhere"))


def test_embedding_cache_reuses_and_matches(tiny_encoder_dir, tmp_path):
    encoder = TextEncoder(str(tiny_encoder_dir), max_tokens=12)
    texts = ["b", "a", "b", "c"]
    first, computed = encode_cached(
        encoder, texts, tmp_path / "c.sqlite", fingerprint=encoder.fingerprint
    )
    assert computed == 3
    again, computed = encode_cached(
        encoder, texts, tmp_path / "c.sqlite", fingerprint=encoder.fingerprint
    )
    assert computed == 0
    torch.testing.assert_close(first.tokens, again.tokens)
    direct = encoder.encode(texts)
    torch.testing.assert_close(first.tokens, direct.tokens.half().float())
    assert torch.equal(first.mask, direct.mask)
    # Another encoder (fingerprint) or token budget never reuses these rows.
    _, computed = encode_cached(encoder, texts, tmp_path / "c.sqlite", fingerprint="other")
    assert computed == 3
    # Nor does the same encoder at another precision (bf16 values differ from fp32's).
    bf16 = TextEncoder(str(tiny_encoder_dir), max_tokens=12, precision="bf16")
    _, computed = encode_cached(bf16, texts, tmp_path / "c.sqlite", fingerprint=bf16.fingerprint)
    assert computed == 3


def test_a_local_text_encoder_without_safetensors_is_refused(tiny_encoder_dir, tmp_path):
    import shutil

    from transformers import AutoModel

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_encoder_dir, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.unlink()
    # The old format, pickled (transformers itself no longer writes it).
    torch.save(
        AutoModel.from_pretrained(tiny_encoder_dir).state_dict(), pickled / "pytorch_model.bin"
    )
    with pytest.raises(ValueError, match="embed.text_model: .* safetensors only"):
        TextEncoder(str(pickled), max_tokens=8)
