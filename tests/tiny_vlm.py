"""A tiny vision-language model built from configs with random weights, for tests.

A real ``LlavaForConditionalGeneration`` (CLIP vision tower, Llama decoder) with a byte-level BPE
tokenizer trained on a few sentences, saved with ``save_pretrained`` so that it loads through the
same Auto* calls as MedGemma. Its captions are gibberish; tests check plumbing, not prose.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["CHAT_TEMPLATE", "PROMPT", "build_tiny_vlm"]

PROMPT = "Describe the tissue morphology in this H&E image in one sentence."

# Renders "<s>USER: <image>\n{prompt}\nASSISTANT:", LLaVA-1.5 style; newlines are written as
# expressions because transformers renders templates with trim_blocks.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>{{ '\\n' }}{% elif item['type'] == 'text' %}"
    "{{ item['text'] }}{% endif %}{% endfor %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_vlm(folder: Path, seed: int = 0) -> None:
    """Save a ~70k-parameter LLaVA, its processor and chat template to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    # Byte-level BPE: any prompt tokenizes, and decoding any id sequence gives a string.
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(
        [PROMPT, "USER: ASSISTANT: dense nuclei, loose stroma, glands."], trainer
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        # CLIP adds a CLS token that the "default" strategy drops: 16 patches -> 16 image tokens.
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
