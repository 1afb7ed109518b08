"""Tiny Hugging Face checkpoints for tests, saved exactly as a user's would be (no hub at run time)."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForPreTraining, BertTokenizer


def save_tiny_bert(directory: Path, vocab: dict[str, int], hidden: int = 32, layers: int = 2, heads: int = 4,
                   intermediate: int = 64) -> Path:
    """A seeded random BERT in BERT's pretraining layout (MLM and next-sentence heads) with a WordPiece
    tokenizer over ``vocab`` (word -> id), saved to ``directory``."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=64)  # fmt: skip
    BertForPreTraining(config).save_pretrained(directory)
    BertTokenizer(vocab=vocab).save_pretrained(directory)
    return directory


def save_tiny_videobert(directory: Path, vocab_dir: Path, words: list[str], hidden: int = 32, layers: int = 2,
                        intermediate: int = 64) -> Path:
    """A random tiny VideoBERT over the visual vocabulary in ``vocab_dir`` whose text side is `save_tiny_bert` over
    ``words`` (the special tokens first), saved as a model directory in ``directory / "model"``."""
    from videobert.model import VideoBertForPreTraining
    from videobert.tokenizer.hkmeans import VisualTokenizer

    bert_dir = save_tiny_bert(directory / "bert", {w: i for i, w in enumerate(words)}, hidden=hidden, layers=layers,
                              intermediate=intermediate)  # fmt: skip
    visual_tokenizer = VisualTokenizer.from_pretrained(vocab_dir)
    model = VideoBertForPreTraining.from_text_checkpoint(bert_dir, visual_tokenizer=visual_tokenizer)
    model.save_pretrained(directory / "model")
    return directory / "model"
