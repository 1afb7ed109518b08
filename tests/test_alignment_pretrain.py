"""A short `videobert pretrain` on a small MiniCook corpus learns the linguistic-visual alignment: on pairs from
videos it never trained on (val and test splits, half of them with the visual sentence of another video), the
alignment head is right well above chance.

The corpus is small in vocabulary rather than in videos (3 verbs x 3 nouns, 0.75 s clips, 12 visual words) and the
model is the demo's width (2 layers x 256): narrower models sit at chance for thousands of steps before the head
finds the text-video interaction (BENCHMARKS.md, "alignment plateau"), which no CI budget affords. About two minutes
on two CPU cores; the other pretraining tests use a tiny model and cover the losses, checkpoints and resume."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from videobert.data.ingest import ingest
from videobert.data.synth import synth
from videobert.features.extract import extract
from videobert.model import VideoBertForPreTraining
from videobert.model.modeling import IGNORE_INDEX
from videobert.tokenizer.stages import tokenize, vocab
from videobert.training.data import MaskingCollator, PretrainCorpus, PretrainDataConfig, PretrainStream
from videobert.training.pretrain import pretrain

STEPS = 1500
RUN = dict(init="scratch:2x256", text_vocab=200, max_steps=STEPS, batch_size=32, learning_rate=1e-3,
           text_weight=0.0, video_weight=0.0, text_video_weight=1.0, negative_prob=0.5, content_word_weight=8.0,
           eval_steps=STEPS, save_steps=STEPS, logging_steps=100, device="cpu", seed=0)  # fmt: skip


@pytest.fixture(scope="module")
def small_minicook(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small_minicook")
    corpus, work = root / "corpus", root / "work"
    synth(corpus, videos=100, seed=0, width=32, height=32, verbs=3, nouns=3)
    for report in (
        ingest(corpus, work),
        extract(work, backbone="pixels", clip_frames=15),
        vocab(work, k=12, depth=1, seed=0),
        tokenize(work),
    ):
        assert report.ok, report
    return work


@pytest.fixture(scope="module")
def trained(small_minicook, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aligned") / "model"
    assert pretrain(small_minicook, out=out, **RUN).ok
    return out


def held_out_alignment(model_dir: Path, work: Path) -> tuple[float, int]:
    """Accuracy of the alignment head on every text-video pair of the val and test videos (one aligned pair per
    sentence unit and one with another held-out video's visual sentence), and the number of pairs."""
    model = VideoBertForPreTraining.from_pretrained(model_dir).eval()
    manifest = pq.read_table(work / "manifest.parquet", columns=["video", "split"]).to_pylist()
    videos = [row["video"] for row in manifest if row["split"] in ("val", "test")]
    corpus = PretrainCorpus.from_work_dir(work)
    stream = PretrainStream(corpus, videos, model.tokenizer, PretrainDataConfig(batch_size=64), train=False)
    collate = MaskingCollator(model.tokenizer, mask_prob=0.0)
    correct = total = 0
    with torch.inference_mode():
        for examples in stream:
            batch = collate(examples)
            keep = batch["alignment_labels"] != IGNORE_INDEX
            if not keep.any():
                continue
            logits = model(input_ids=batch["input_ids"][keep], token_type_ids=batch["token_type_ids"][keep],
                           attention_mask=batch["attention_mask"][keep]).alignment_logits  # fmt: skip
            correct += int((logits.argmax(-1) == batch["alignment_labels"][keep]).sum())
            total += int(keep.sum())
    return correct / total, total


def test_short_pretraining_aligns_text_and_video_on_held_out_videos(trained, small_minicook):
    accuracy, pairs = held_out_alignment(trained, small_minicook)
    assert pairs >= 200
    assert accuracy >= 0.65, f"held-out alignment accuracy {accuracy:.3f} on {pairs} pairs"


def test_alignment_is_at_chance_before_training(trained, small_minicook, tmp_path):
    """The same evaluation on the untrained model: the accuracy above is learnt, not an artefact of the pairs."""
    untrained = tmp_path / "untrained"
    assert pretrain(small_minicook, out=untrained, **{**RUN, "max_steps": 1, "eval_steps": 1, "save_steps": 1}).ok
    accuracy, _ = held_out_alignment(untrained, small_minicook)
    assert abs(accuracy - 0.5) < 0.1, accuracy


def test_the_masked_token_losses_fall_too(trained):
    import json

    metrics = json.loads((trained / "metrics.json").read_text())
    for key in ("mlm_loss_text_video_words", "mlm_loss_text_video_visual"):
        assert metrics["eval"][key] < metrics["eval_start"][key] - 0.5, key
