"""Shared fixtures. ``minicook_work`` runs the real pipeline once per test session on a small generated
corpus, so the tests of later stages start from artifacts made exactly as a user's would be."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

MINICOOK_VIDEOS = 30


@pytest.fixture(scope="session")
def minicook_work(tmp_path_factory) -> Path:
    """A work dir with manifest, sentences, segments, features, vocab (k=12, depth=2) and tokens for a
    30-video MiniCook corpus at 64x64 (about 20 s to build on 2 cores)."""
    from videobert.data.ingest import ingest
    from videobert.data.synth import synth
    from videobert.features.extract import extract
    from videobert.tokenizer.stages import tokenize, vocab

    root = tmp_path_factory.mktemp("minicook")
    corpus, work = root / "corpus", root / "work"
    synth(corpus, videos=MINICOOK_VIDEOS, seed=0, width=64, height=64)
    for report in (
        ingest(corpus, work),
        extract(work, backbone="pixels"),
        vocab(work, k=12, depth=2, seed=0),
        tokenize(work),
    ):
        assert report.ok, report
    return work


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models: they gain nothing from more, while on a busy machine OpenMP
    threads that wait for each other make them many times slower. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_export(minicook_work, tmp_path_factory) -> tuple[Path, Path, object]:
    """(model directory, export directory, export report): a random tiny VideoBERT over the MiniCook vocabulary and
    its ONNX export, fp32 and int8, with the encoder of a captioner that reads visual words and clip features,
    checked on the work dir's test split (about 30 s on 2 cores)."""
    from checkpoints import save_tiny_videobert
    from videobert.data.synth import NOUNS, VERBS
    from videobert.model.captioning import VideoBertForCaptioning
    from videobert.serving.export import export
    from videobert.utils.io import read_json

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "now", "let", "me", "show", "you", "how", "to", "the",
             *VERBS, *NOUNS]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tiny_export")
    model = save_tiny_videobert(root, minicook_work / "vocab", words)
    feature_dim = read_json(minicook_work / "features" / "meta.json")["dim"]
    captioner = VideoBertForCaptioning.from_videobert(model, encoder_mode="pretrained+features", feature_dim=feature_dim)
    captioner.save_pretrained(root / "captioner")
    report = export(model, out=root / "export", quantize="int8", captioner=root / "captioner", work=minicook_work)
    torch.set_num_threads(threads)
    return model, root / "export", report
