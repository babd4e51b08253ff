"""A tiny Florence-2 with random weights, in transformers' own format, for tests (no download).

`build_tiny_florence2(folder)` writes what `Florence2ForConditionalGeneration.from_pretrained` and
`AutoProcessor.from_pretrained` read from a real checkpoint folder (e.g. florence-community/
Florence-2-base): config.json + model.safetensors, a BART byte-level BPE tokenizer made offline
(every byte as a token, no merges, plus `<image>`), a CLIPImageProcessor at 64x64 whose
`image_seq_length` (5 = one pooled + 2x2 spatial tokens) matches the vision tower. The decoder's
final logits are biased towards the token "a", so generation is deterministic: "aaaa...".
"""

from __future__ import annotations

from pathlib import Path

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
IMAGE_SIZE = 64
IMAGE_SEQ = 1 + (IMAGE_SIZE // 32) ** 2  # patch strides 4*2*2*2 = 32


def _byte_chars() -> list[str]:
    """GPT-2/BART's byte-to-unicode table (every byte as a printable character)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def build_tiny_florence2(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Florence-2 checkpoint folder; returns it."""
    import torch
    from transformers import (
        BartConfig,
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
        Florence2VisionConfig,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *_byte_chars(), "<mask>", "<image>"])}
    tokenizer = BartTokenizer(vocab=vocab, merges=[], extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=False,
        image_seq_length=IMAGE_SEQ,
    )
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(folder)

    torch.manual_seed(seed)
    text = BartConfig(
        vocab_size=len(vocab),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        bos_token_id=vocab["<s>"],
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["</s>"],
        forced_bos_token_id=vocab["<s>"],
        forced_eos_token_id=vocab["</s>"],
    )
    vision = Florence2VisionConfig(
        depths=(1, 1, 1, 1),
        embed_dim=(16, 16, 16, 16),
        num_heads=(2, 2, 2, 2),
        num_groups=(2, 2, 2, 2),
        window_size=2,
        projection_dim=32,
        drop_path_rate=0.0,
    )
    config = Florence2Config(text_config=text, vision_config=vision, image_token_id=vocab["<image>"])
    model = Florence2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # lm_head shares the token embeddings: scale up the row of "a" so it wins every step.
        model.get_output_embeddings().weight[vocab["a"]] *= 1000.0
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(folder)
    return folder
