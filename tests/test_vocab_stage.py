"""vocab -> tokenize -> inspect-vocab on a small work directory: synthetic features in real shards, real
lossless videos behind the manifest (each clip one solid colour, so a thumbnail can be checked exactly)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from videobert.cli import command_from_function
from videobert.data.schema import MANIFEST, SEGMENTS
from videobert.features.store import FeatureStore, ShardWriter
from videobert.tokenizer.hkmeans import VisualTokenizer
from videobert.tokenizer.stages import (
    THUMB_SIZE,
    clip_labels,
    inspect_vocab,
    token_informativeness,
    tokenize,
    tokens_metadata,
    vocab,
)
from videobert.utils.errors import ConfigError, InputError, read_errors
from videobert.workdir import WorkDir
from media import write_lossless

FPS = 10  # frames per second of the fixture videos; one clip = 1 s = 10 frames
CLIPS = {"a.mp4": 8, "b/c.mp4": 3, "d.mp4": 5}  # video -> number of clips; 3 shards of >= 5 clips
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]], np.uint8)  # one per class
# feature centre per class, hierarchical like the vocabulary: classes {0, 1} and {2, 3} differ in four
# dimensions, the two classes of a pair in one, so a 2 x 2 tree can give each class its own word
CENTERS = np.array(
    [[5, 5, 5, 5, 3, 0], [5, 5, 5, 5, -3, 0], [-5, -5, -5, -5, 0, 3], [-5, -5, -5, -5, 0, -3]], np.float32
)


def clip_class(video: str, clip: int) -> int:
    return (sorted(CLIPS).index(video) * 3 + clip) % 4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for video, n in CLIPS.items():
        colors = COLORS[[clip_class(video, c) for c in range(n)]]  # (n, 3)
        frames = np.repeat(colors[:, None, None, None, :], FPS, axis=1)  # (n, FPS, 1, 1, 3)
        frames = np.broadcast_to(frames, (n, FPS, 24, 32, 3)).reshape(n * FPS, 24, 32, 3)  # (T, H, W, 3)
        write_lossless(root / video, np.ascontiguousarray(frames), FPS)
    return root


def make_work(root: Path, corpus: Path, meta: dict | None = None, seed: int = 0) -> Path:
    """A work directory as ingest + extract would leave it: manifest, feature shards, clips.parquet."""
    rng = np.random.default_rng(seed)
    rows = [{"video": v, "path": str(corpus / v), "fps": float(FPS)} for v in CLIPS]
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST), WorkDir(root).ensure().manifest)
    writer = ShardWriter(root, meta or {"backbone": "test", "dim": 6}, shard_clips=5)
    for video, n in CLIPS.items():
        classes = [clip_class(video, c) for c in range(n)]
        feats = CENTERS[classes] + rng.normal(0, 0.3, size=(n, 6)).astype(np.float32)
        writer.add_video(video, [float(c) for c in range(n)], [float(c + 1) for c in range(n)], feats)
    writer.close()
    return root


@pytest.fixture
def work(tmp_path, corpus) -> Path:
    return make_work(tmp_path / "work", corpus)


def test_vocab_tokenize_inspect(work, capsys):
    report = vocab(work, k=2, depth=2)
    assert report.done == 1 and report.stats["vocab_size"] == 4
    assert {p.name for p in WorkDir(work).vocab.iterdir()} == {"config.json", "centroids.safetensors", "source.json"}

    report = tokenize(work)
    assert report.done == 16
    tokens = pq.read_table(WorkDir(work).tokens)
    clips = pq.read_table(WorkDir(work).clips)
    assert tokens.column_names == ["video", "clip", "start", "end", "token"]
    for name in ("video", "clip", "start", "end"):
        assert tokens[name].to_pylist() == clips[name].to_pylist()
    tokenizer = VisualTokenizer.from_pretrained(WorkDir(work).vocab)
    expected = tokenizer.encode(FeatureStore(work).load())
    np.testing.assert_array_equal(tokens["token"].to_numpy(), expected)
    assert tokens_metadata(WorkDir(work).tokens)["vocab_hash"] == tokenizer.content_hash
    # four well-separated classes and four words: the words are the classes
    classes = [clip_class(v, c) for v, c in zip(clips["video"].to_pylist(), clips["clip"].to_pylist())]
    assert token_informativeness(expected, classes)["nmi"] == pytest.approx(1.0)

    word = int(np.bincount(expected).argmax())
    report = inspect_vocab(work, token=word, top=3, max_clips=4)
    assert report.ok and report.stats["words_used"] == 4 and report.stats["token_clips"] == 4
    assert report.stats["perplexity"] == pytest.approx(4.0, rel=0.05)
    printed = capsys.readouterr().out
    assert "most frequent" in printed and str(word) in printed
    png = Path(report.outputs["thumbnails"])
    assert png == work / "inspect" / f"token-{word}.png"
    grid = np.asarray(Image.open(png).convert("RGB"))
    width, height = THUMB_SIZE
    assert grid.shape == (2 * height, 2 * width, 3)  # 4 clips -> 2 x 2 cells
    color = COLORS[classes[int(np.flatnonzero(expected == word)[0])]]
    for cell in range(4):
        y, x = (cell // 2) * height + height // 2, (cell % 2) * width + width // 2
        np.testing.assert_allclose(grid[y, x], color, atol=2)


def test_vocab_skips_same_settings_and_guards_other_settings(work):
    vocab(work, k=2, depth=2)
    first = json.loads((WorkDir(work).vocab / "config.json").read_text())["content_hash"]
    again = vocab(work, k=2, depth=2)
    assert again.skipped == 1 and again.done == 0 and again.stats["content_hash"] == first
    with pytest.raises(ConfigError, match="k: 2 -> 3.*overwrite"):
        vocab(work, k=3, depth=2)
    with pytest.raises(ConfigError, match="max_points"):
        vocab(work, k=2, depth=2, max_points=10)
    assert vocab(work, k=2, depth=2, max_points=10**6).skipped == 1  # still all 16 clips
    replaced = vocab(work, k=3, depth=2, overwrite=True)
    assert replaced.done == 1 and replaced.stats["vocab_size"] == 9
    assert not [p for p in work.iterdir() if p.name.startswith(".vocab")]  # no temp or old dirs left


def test_vocab_notices_changed_features(tmp_path, corpus):
    work = make_work(tmp_path / "w", corpus, seed=0)
    vocab(work, k=2, depth=1)
    for p in WorkDir(work).features.iterdir():
        p.unlink()
    make_work(work, corpus, seed=1)
    with pytest.raises(ConfigError, match="features changed"):
        vocab(work, k=2, depth=1)


def test_vocab_fits_on_a_sample(work):
    report = vocab(work, k=2, depth=1, max_points=6)
    assert report.stats["fit_points"] == 6
    assert tokenize(work).done == 16


def test_tokenize_batches_skips_and_follows_the_vocab(work):
    vocab(work, k=2, depth=2)
    tokenize(work, batch_size=3)
    small = pq.read_table(WorkDir(work).tokens)["token"].to_pylist()
    assert tokenize(work).skipped == 16
    WorkDir(work).tokens.unlink()
    tokenize(work)
    assert pq.read_table(WorkDir(work).tokens)["token"].to_pylist() == small
    vocab(work, k=2, depth=1, overwrite=True)
    report = tokenize(work)
    assert report.done == 16 and max(pq.read_table(WorkDir(work).tokens)["token"].to_pylist()) < 2


def test_tokenize_refuses_features_of_another_backbone(tmp_path, corpus):
    work = make_work(tmp_path / "w", corpus)
    vocab(work, k=2, depth=1)
    for p in WorkDir(work).features.iterdir():
        p.unlink()
    make_work(work, corpus, meta={"backbone": "other", "dim": 6})
    with pytest.raises(ConfigError, match="backbone"):
        tokenize(work)


def test_stages_name_the_missing_stage(tmp_path):
    with pytest.raises(InputError, match="extract"):
        vocab(tmp_path)
    with pytest.raises(InputError, match="vocab"):
        tokenize(tmp_path)


def test_inspect_records_unreadable_videos(work, corpus):
    vocab(work, k=2, depth=2)
    tokenize(work)
    rows = [{"video": v, "path": str(corpus / v) if v != "a.mp4" else "/nonexistent.mp4"} for v in CLIPS]
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST), WorkDir(work).manifest)
    tokens = pq.read_table(WorkDir(work).tokens)
    word = tokens["token"][0].as_py()  # a.mp4's first clip
    n = int((tokens["token"].to_numpy() == word).sum())
    in_a = int(((tokens["token"].to_numpy() == word) & (np.array(tokens["video"].to_pylist()) == "a.mp4")).sum())
    out = work / "grid.png"
    report = inspect_vocab(work, token=word, out=out)
    assert report.failed == in_a and Path(report.outputs["thumbnails"]) == out and out.exists()
    errors = read_errors(WorkDir(work).errors)
    assert len(errors) == in_a and all(e.stage == "inspect-vocab" and "a.mp4@" in e.item for e in errors)
    assert report.stats["token_clips"] == n
    with pytest.raises(ConfigError, match="token must be"):
        inspect_vocab(work, token=4)


def test_inspect_reports_label_informativeness(work):
    vocab(work, k=2, depth=2)
    tokenize(work)
    segments = [
        {"video": "a.mp4", "index": 0, "start": 0.0, "end": 4.0, "verb": "cut", "noun": None},
        {"video": "a.mp4", "index": 1, "start": 4.0, "end": 8.0, "verb": "stir", "noun": "pot"},
        {"video": "d.mp4", "index": 0, "start": 1.0, "end": 3.0, "verb": "cut", "noun": "pot"},
    ]
    pq.write_table(pa.Table.from_pylist(segments, schema=SEGMENTS), WorkDir(work).segments)
    report = inspect_vocab(work)
    assert 0.0 <= report.stats["verb_nmi"] <= 1.0 and "noun_purity" in report.stats
    assert "thumbnails" not in report.outputs


def test_clip_labels_use_the_clip_midpoint():
    clips = pa.table({"video": ["a", "a", "a", "b"], "start": [0.0, 1.0, 2.0, 0.0], "end": [1.0, 2.0, 3.0, 1.0]})
    segments = pa.table(
        {"video": ["a", "a", "b"], "start": [0.4, 1.6, 0.6], "end": [1.6, 5.0, 2.0], "verb": ["x", "y", "z"]}
    )
    assert clip_labels(clips, segments, "verb") == ["x", "x", "y", None]


def test_separated_blobs_give_informative_tokens():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 10, size=(12, 16))
    labels = rng.integers(0, 12, 1200)
    x = (centers[labels] + rng.normal(0, 1, size=(1200, 16))).astype(np.float32)
    from videobert.tokenizer.hkmeans import VisualVocabConfig

    flat = VisualTokenizer(VisualVocabConfig(k=12, depth=1)).fit(x).encode(x)
    info = token_informativeness(flat, labels)
    assert info["nmi"] > 0.9 and info["purity"] > 0.9
    assert info["nmi_shuffled"] < 0.05 and info["purity_shuffled"] < 0.2
    # deeper trees only split blobs further: every word stays (almost) pure
    deep = token_informativeness(VisualTokenizer(VisualVocabConfig(k=12, depth=2)).fit(x).encode(x), labels)
    assert deep["purity"] > 0.95 and deep["nmi"] > 3 * deep["nmi_shuffled"]


def test_stages_work_as_cli_commands(work):
    app = typer.Typer()
    for name, fn in {"vocab": vocab, "tokenize": tokenize, "inspect-vocab": inspect_vocab}.items():
        app.command(name=name)(command_from_function(fn, name))
    runner = CliRunner()
    for name in ("vocab", "tokenize", "inspect-vocab"):
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["vocab", str(work), "--k", "2", "--depth", "2"]).exit_code == 0
    assert runner.invoke(app, ["vocab", str(work), "--k", "3"]).exit_code == 2  # other settings, no --overwrite
    assert runner.invoke(app, ["tokenize", str(work)]).exit_code == 0
    result = runner.invoke(app, ["inspect-vocab", str(work), "--token", "0", "--out", str(work / "t.png")])
    assert result.exit_code == 0, result.output


def test_video_centring_removes_what_a_whole_video_shares(tmp_path):
    """Two videos whose clips differ only by a per-video offset (a background colour) get the same words once each
    video's mean is subtracted; without centring the offset decides the words. Tokenize uses the means of whole videos,
    whatever the shard boundaries."""
    from videobert.tokenizer.hkmeans import VisualTokenizer, VisualVocabConfig, video_means

    rng = np.random.default_rng(0)
    steps = rng.normal(size=(4, 6)).astype(np.float32) * 0.3  # four step types, the same in both videos
    a = steps + np.float32(10.0)  # video a: a large offset on every clip
    b = steps - np.float32(10.0)
    feats, videos = np.concatenate([a, b]), np.array(["a"] * 4 + ["b"] * 4)
    means = video_means(feats, videos)
    np.testing.assert_allclose(means[:4], np.broadcast_to(a.mean(0), (4, 6)), rtol=1e-5)
    centred = VisualTokenizer(VisualVocabConfig(k=4, depth=1, normalize="none", center="video")).fit(feats, means=means)
    words = centred.encode(feats, means=means)
    assert words[:4].tolist() == words[4:].tolist() and len(set(words[:4].tolist())) == 4
    plain = VisualTokenizer(VisualVocabConfig(k=4, depth=1, normalize="none")).fit(feats)
    assert not set(plain.encode(feats)[:4].tolist()) & set(plain.encode(feats)[4:].tolist())
    with pytest.raises(ConfigError, match="centres each video"):
        centred.encode(feats)
    with pytest.raises(ConfigError, match="does not centre"):
        plain.encode(feats, means=means)
    # The hash of a vocabulary without centring does not mention it (older vocabularies keep their hash), and the
    # setting survives a save/load.
    centred.save_pretrained(tmp_path / "v")
    assert VisualTokenizer.from_pretrained(tmp_path / "v").content_hash == centred.content_hash
    assert VisualTokenizer.from_pretrained(tmp_path / "v").centres_videos


def test_vocab_stage_centres_videos(minicook_work, tmp_path):
    import shutil

    from videobert.tokenizer.stages import store_video_means

    work = tmp_path / "work"
    shutil.copytree(minicook_work, work)
    report = vocab(work, k=12, depth=2, seed=0, center="video", overwrite=True)
    assert report.done == 1 and json.loads((work / "vocab" / "config.json").read_text())["config"]["center"] == "video"
    assert tokenize(work).done > 0
    store = FeatureStore(work)
    means = store_video_means(store)
    first = store.clips["video"][0].as_py()
    rows = [i for i, v in enumerate(store.clips["video"].to_pylist()) if v == first]
    np.testing.assert_allclose(means[first], store.load()[rows].mean(0), rtol=1e-4, atol=1e-5)


def test_vocab_refuses_an_unknown_centring(minicook_work, tmp_path):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(minicook_work, work)
    with pytest.raises(ConfigError, match="center must be one of none, video"):
        vocab(work, k=12, depth=2, center="scene", overwrite=True)
