"""How separable are aligned and misaligned text-video pairs with a simple model? A bilinear logistic regression on
(text word x visual word) co-occurrence features, trained on pairs from the pretraining stream of the training
videos and scored on the held-out (val) pairs that `videobert pretrain` evaluates its alignment head on. A ceiling
check for the alignment head: if this probe is near 50 %, the data has no alignment signal; if it is well above,
the head has something to learn.

    .venv/bin/python benchmarks/alignment_probe.py WORK MODEL [--batches 400]

MODEL is any model directory written by `videobert pretrain` on WORK (only its tokenizer is used).
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
from scipy.sparse import lil_matrix
from sklearn.linear_model import LogisticRegression

from videobert.model import VideoBertForPreTraining
from videobert.training.data import TEXT_VIDEO, PretrainCorpus, PretrainDataConfig, PretrainStream


def pairs(corpus, videos, tokenizer, train: bool, batches: int):
    """(text word ids, visual words) sets and alignment labels of the text-video examples of a stream."""
    config = tokenizer.config
    data = PretrainDataConfig(batch_size=32, text_weight=0, video_weight=0, text_video_weight=1, seed=1)
    stream = PretrainStream(corpus, videos, tokenizer, data, train=train)
    examples, labels = [], []
    for batch in itertools.islice(itertools.cycle(stream) if train else stream, batches):
        for example in batch:
            if example.regime != TEXT_VIDEO:
                continue
            ids = np.array(example.input_ids)
            specials = list(config.special_tokens.values())
            text = ids[config.is_text(ids) & ~np.isin(ids, specials)]
            visual = config.id_to_visual_token(ids[config.is_visual(ids)])
            examples.append((set(text.tolist()), set(visual.tolist())))
            labels.append(example.alignment_label)
    return examples, np.array(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work")
    parser.add_argument("model")
    parser.add_argument("--batches", type=int, default=400, help="training batches of 32 drawn from the stream")
    args = parser.parse_args()
    tokenizer = VideoBertForPreTraining.from_pretrained(args.model).tokenizer
    corpus = PretrainCorpus.from_work_dir(args.work)
    train, y_train = pairs(corpus, corpus.train_videos, tokenizer, True, args.batches)
    held_out, y_held_out = pairs(corpus, corpus.eval_videos, tokenizer, False, 10**9)
    words = {w: i for i, w in enumerate(sorted({w for text, _ in train for w in text}))}
    visual_words = tokenizer.config.visual_vocab_size

    def features(examples):
        matrix = lil_matrix((len(examples), len(words) * visual_words))
        for row, (text, visual) in enumerate(examples):
            for w in text & words.keys():
                for v in visual:
                    matrix[row, words[w] * visual_words + v] = 1
        return matrix.tocsr()

    probe = LogisticRegression(max_iter=2000).fit(features(train), y_train)
    print(f"pairs: {len(train)} train, {len(held_out)} held-out (aligned share {y_held_out.mean():.2f})")
    print(f"bilinear probe alignment accuracy: held-out {probe.score(features(held_out), y_held_out):.3f}, "
          f"train {probe.score(features(train), y_train):.3f}")


if __name__ == "__main__":
    main()
