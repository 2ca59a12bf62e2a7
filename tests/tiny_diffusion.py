"""A tiny, randomly initialised Stable Diffusion pipeline built offline for tests and the bench.

Every part comes from a config (tiny UNet, VAE and CLIP text encoder), the CLIP tokenizer
from an in-memory byte-level vocabulary, so nothing is ever downloaded. The weights are
random, so images are noise-like, but every code path (text encoding, denoising loop, VAE,
image-to-image, inpainting, seeds, batching) is the real diffusers one.
"""

from __future__ import annotations

import json
from pathlib import Path

TOKENS_START = "<|startoftext|>"
TOKENS_END = "<|endoftext|>"


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP's byte-to-unicode table: the characters the byte-level BPE works on."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def write_tokenizer(directory: Path) -> int:
    """A character-level CLIP vocabulary (no merges); returns the vocabulary size."""
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + [TOKENS_START, TOKENS_END]
    vocab = {token: i for i, token in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


def build_tiny_pipeline(directory: Path) -> Path:
    """Save a tiny StableDiffusionPipeline to ``directory`` and return it."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    scratch = directory.parent / (directory.name + "-tokenizer")
    vocab_size = write_tokenizer(scratch)
    tokenizer = CLIPTokenizer(
        str(scratch / "vocab.json"), str(scratch / "merges.txt"), model_max_length=32
    )
    start_id = tokenizer.convert_tokens_to_ids(TOKENS_START)
    end_id = tokenizer.convert_tokens_to_ids(TOKENS_END)
    assert isinstance(start_id, int) and isinstance(end_id, int)  # one token, one id
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=32,
            bos_token_id=start_id,
            eos_token_id=end_id,
            pad_token_id=end_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=64,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # mypy reads diffusers' placeholder class (for installs without torch), not the real one.
    pipe.save_pretrained(directory)  # type: ignore[attr-defined]
    return directory
