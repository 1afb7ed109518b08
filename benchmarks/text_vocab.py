"""Step cost of a small VideoBERT from scratch with MiniLM's 30,522-word text vocabulary against the same model with
a 1,000-word vocabulary (`videobert pretrain --text-vocab 1000`), in one run on the same random batches: forward,
backward and AdamW step, and forward + backward alone (the difference is the optimizer, whose update of the
embedding table grows with the vocabulary).

    .venv/bin/python benchmarks/text_vocab.py [--layers 2 --hidden 256 --steps 20]
"""
from __future__ import annotations

import argparse
import time

import torch
from transformers import BertConfig

from videobert.model import VideoBertConfig, VideoBertForPreTraining

BATCH, LENGTH, VISUAL_WORDS = 32, 40, 144  # a MiniCook batch: 32 sequences of about 40 tokens


def step_ms(text_vocab: int, layers: int, hidden: int, steps: int) -> tuple[float, float]:
    """(full step, forward + backward) milliseconds per batch."""
    torch.manual_seed(0)
    text = BertConfig(vocab_size=text_vocab, hidden_size=hidden, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden)  # fmt: skip
    model = VideoBertForPreTraining(VideoBertConfig.from_text_config(text, visual_vocab_size=VISUAL_WORDS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, text_vocab, (BATCH, LENGTH))
    labels = torch.full((BATCH, LENGTH), -100)
    masked = torch.rand(BATCH, LENGTH) < 0.15
    labels[masked] = ids[masked]
    inputs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels,
                  alignment_labels=torch.randint(0, 2, (BATCH,)))  # fmt: skip

    def timed(with_optimizer: bool) -> float:
        for _ in range(3):  # warm-up
            model(**inputs).loss.backward()
            optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        for _ in range(steps):
            model(**inputs).loss.backward()
            if with_optimizer:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return 1000 * (time.perf_counter() - start) / steps

    return timed(True), timed(False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    results = {vocab: step_ms(vocab, args.layers, args.hidden, args.steps) for vocab in (30522, 1000)}
    for vocab, (full, forward_backward) in results.items():
        print(f"text vocabulary {vocab:>6}: step {full:6.1f} ms (forward + backward {forward_backward:6.1f} ms, "
              f"optimizer {full - forward_backward:5.1f} ms)")
    print(f"speed-up of the 1,000-word vocabulary: {results[30522][0] / results[1000][0]:.2f}x")


if __name__ == "__main__":
    main()
