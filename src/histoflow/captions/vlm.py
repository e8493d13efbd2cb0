"""Vision-language captioner: any Hugging Face image-text-to-text model, by hub id or folder.

The documented example is MedGemma (``google/medgemma-4b-it``, gated: it needs
``huggingface-cli login`` and network once, then loads from the local cache). Any model that
``AutoProcessor`` and ``AutoModelForImageTextToText`` load works the same way: each image gets
the chat prompt ``[image, prompt]``, and greedy decoding turns it into one caption.

A model's revision keys the caption cache, so it must change when the model does: for a local
folder it is a sha256 of the folder's files (names and contents); for a hub id it is the commit
that the local hub cache resolves the requested revision to.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch
from PIL import Image

__all__ = ["VLMCaptioner", "model_revision"]

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_HOW_TO_PROVIDE = (
    "Gated hub models such as google/medgemma-4b-it need `huggingface-cli login` (after "
    "accepting the model's terms on huggingface.co) and network on the first run; offline, set "
    "params.yaml `captions.model` to a local folder holding the model (config, processor and "
    "weights, as written by save_pretrained), or use `captions.backend: morphology`."
)


class VLMCaptioner:
    """Caption images with a Hugging Face image-text-to-text model, deterministically.

    Example:
        >>> captioner = VLMCaptioner("google/medgemma-4b-it", prompt="Describe the tissue.")
        >>> captioner.caption_batch([Image.open("tile.png")])  # doctest: +SKIP
        ['Densely packed glands lined by columnar epithelium with ...']
    """

    name = "vlm"

    def __init__(
        self,
        model: str,
        *,
        revision: str = "main",
        prompt: str,
        max_new_tokens: int = 48,
        seed: int = 0,
        device: str | None = None,
    ):
        """Load the processor and model.

        Args:
            model: Hugging Face hub id or path of a local folder written by ``save_pretrained``.
            revision: Hub branch, tag or commit; ignored for local folders.
            prompt: The instruction that follows the image in the user turn.
            max_new_tokens: Longest caption, in tokens.
            seed: Seeds torch before each generation.
            device: ``cuda``, ``cpu``, ...; None picks CUDA when available.

        Raises:
            RuntimeError: The model cannot be found or loaded; the message says how to provide it.
        """
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self._model_id = model
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.seed = seed
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.dtype = torch.bfloat16 if bf16 else torch.float32

        local = _local_folder(model)
        # Fingerprint before loading, so the revision describes the files that get loaded.
        self._revision = model_revision(model, revision) if local else revision
        kwargs: dict[str, Any] = {"revision": revision, "local_files_only": local is not None}
        try:
            self.processor = AutoProcessor.from_pretrained(model, **kwargs)
            self.model = AutoModelForImageTextToText.from_pretrained(
                model, dtype=self.dtype, **kwargs
            )
        except OSError as exc:  # not cached and no network, gated, no such repo or files
            raise RuntimeError(
                f"cannot load caption model {model!r}: {exc}\n{_HOW_TO_PROVIDE}"
            ) from exc
        except ValueError as exc:  # e.g. an architecture that is not image-text-to-text
            raise RuntimeError(
                f"cannot load caption model {model!r} as an image-text-to-text model: {exc}\n"
                "captions.model must name a vision-language model (AutoModelForImageTextToText)."
            ) from exc
        self.model.to(self.device).eval()
        if local is None:
            # Now the files are in the hub cache, so the requested revision resolves offline.
            self._revision = model_revision(model, revision)

        tokenizer = self.processor.tokenizer
        # Left padding keeps every prompt's end next to its generated tokens, as decoders need.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._text = _render_prompt(self.processor, prompt)

    @property
    def model_id(self) -> str:
        """The model as given: hub id or local folder path."""
        return self._model_id

    @property
    def revision(self) -> str:
        """Content fingerprint (local folder) or resolved commit hash (hub id); see the module."""
        return self._revision

    @torch.inference_mode()
    def caption_batch(self, images: list[Image.Image]) -> list[str]:
        """Caption ``images`` in one batched, greedy generation.

        Args:
            images: Pillow images of any size and mode (converted to RGB).

        Returns:
            One caption per image, whitespace-stripped; "" where the model generated nothing.
        """
        if not images:
            return []
        texts = [self._text] * len(images)
        # One image per prompt, nested so processors that batch per sample (Gemma 3) agree.
        nested = [[image.convert("RGB")] for image in images]
        tokenizer = self.processor.tokenizer
        # A template that writes the BOS token itself must not get a second one.
        bos = tokenizer.bos_token
        add_special_tokens = not (bos and self._text.startswith(bos))
        inputs = self.processor(
            images=nested,
            text=texts,
            padding=True,
            add_special_tokens=add_special_tokens,
            return_tensors="pt",
        ).to(self.device, dtype=self.dtype)  # dtype casts only floating tensors (pixels)
        torch.manual_seed(self.seed)
        generated = self.model.generate(
            **inputs,
            max_new_tokens=self.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )  # (B, L + new)
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]  # (B, new)
        captions = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [caption.strip() for caption in captions]

    def __call__(self, image: Image.Image) -> str:
        """The caption of one image."""
        return self.caption_batch([image])[0]


def model_revision(model: str, revision: str = "main") -> str:
    """The revision that keys a model's captions, found without loading the model.

    Args:
        model: Hub id or local folder path.
        revision: Hub branch, tag or commit.

    Returns:
        For a local folder, the sha256 (hex) of its files' relative paths and contents, hidden
        files excepted: a copy of the folder keeps it, changed weights change it. Hashing reads
        every file (about a second per GB). For a hub id, the commit hash that ``revision``
        resolves to in the local hub cache, or ``revision`` itself when that is not cached.
    """
    folder = _local_folder(model)
    if folder is not None:
        return _folder_sha256(folder)
    if _COMMIT.match(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(model, "config.json", revision=revision)
    except ValueError:  # not a valid repo id: nothing cached under it
        return revision
    if isinstance(cached, str):
        commit = Path(cached).parent.name  # .../snapshots/<commit>/config.json
        if _COMMIT.match(commit):
            return commit
    return revision


def _local_folder(model: str) -> Path | None:
    """``model`` as a folder, None for a hub id; a path that does not exist raises.

    Hub ids are ``name`` or ``owner/name``; anything else path-like must be an existing folder,
    so a typo in a path fails here instead of as a confusing hub lookup.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    looks_like_path = (
        path.is_absolute() or model.startswith((".", "~")) or "\\" in model or model.count("/") > 1
    )
    if path.exists():
        raise RuntimeError(
            f"caption model {model!r} is a file; it must be a folder.\n{_HOW_TO_PROVIDE}"
        )
    if looks_like_path:
        raise RuntimeError(f"caption model folder {model!r} does not exist.\n{_HOW_TO_PROVIDE}")
    return None


def _folder_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(folder).parts)
    )
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def _render_prompt(processor: Any, prompt: str) -> str:
    r"""The text of one user turn holding an image and ``prompt``, ready for generation.

    Uses the processor's chat template; without one, the common ``<image>\\n{prompt}`` layout
    with the processor's own image placeholder.
    """
    if getattr(processor, "chat_template", None):
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        ]
        return processor.apply_chat_template(messages, add_generation_prompt=True)
    image_token = getattr(processor, "image_token", None) or "<image>"
    return f"{image_token}\n{prompt}"
