"""The alignment head can learn: on pairs where a word names the cluster of the visual words, a tiny
VideoBERT trained on the alignment loss alone separates aligned from shuffled pairs on fresh data. A
wiring mistake (labels detached from their pairs, a head without gradient, visual tokens masked out of
attention) keeps this at chance."""
from __future__ import annotations

import numpy as np
import torch

from videobert.model import VideoBertConfig, VideoBertForPreTraining
from videobert.model.configuration import ALIGNED, NOT_ALIGNED

CLASSES, PER_CLASS = 4, 4  # visual words 4c..4c+3 show class c; text word 10+c names it


def _pairs(config: VideoBertConfig, rng: np.random.Generator, n: int):
    ids, labels = [], []
    for _ in range(n):
        c = int(rng.integers(CLASSES))
        aligned = rng.random() < 0.5
        shown = c if aligned else (c + int(rng.integers(1, CLASSES))) % CLASSES
        visual = [config.visual_token_to_id(shown * PER_CLASS + int(rng.integers(PER_CLASS))) for _ in range(5)]
        ids.append([config.cls_token_id, 20, 10 + c, 21, config.visual_separator_token_id, *visual, config.sep_token_id])
        labels.append(ALIGNED if aligned else NOT_ALIGNED)
    input_ids = torch.tensor(ids)  # (n, 11)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, 5:] = 1  # the visual part
    return input_ids, token_type_ids, torch.tensor(labels)


def test_alignment_head_learns_a_learnable_alignment():
    torch.manual_seed(0)
    config = VideoBertConfig(
        text_vocab_size=30, visual_vocab_size=CLASSES * PER_CLASS, visual_vocab_hash="toy", hidden_size=64,
        num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        cls_token_id=1, sep_token_id=2, mask_token_id=3, pad_token_id=0,
    )
    model = VideoBertForPreTraining(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(300):
        input_ids, token_type_ids, labels = _pairs(config, rng, 64)
        model(input_ids=input_ids, token_type_ids=token_type_ids, alignment_labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    input_ids, token_type_ids, labels = _pairs(config, np.random.default_rng(1), 256)
    with torch.inference_mode():
        logits = model(input_ids=input_ids, token_type_ids=token_type_ids).alignment_logits
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    assert accuracy >= 0.9, accuracy
