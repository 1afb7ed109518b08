"""Pretraining data: visual sentences, regimes, augmentations, negatives, masking statistics, streaming and sharding,
on small hand-made tokens/sentences tables."""
from __future__ import annotations

import itertools
import json
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import AutoTokenizer

import videobert.training.data as data_module
from videobert.data.schema import CLIPS, MANIFEST, SENTENCES, TOKENS
from videobert.model import ALIGNED, NOT_ALIGNED, VideoBertConfig, VideoBertTokenizer, default_text_checkpoint
from videobert.tokenizer.hkmeans import VisualTokenizer, VisualVocabConfig
from videobert.tokenizer.stages import META_FEATURES, META_VOCAB_HASH
from videobert.training.data import (
    TEXT,
    TEXT_VIDEO,
    VIDEO,
    MaskingCollator,
    PretrainCorpus,
    PretrainDataConfig,
    PretrainExample,
    PretrainStream,
    ShuffleBuckets,
    VideoRecord,
    is_content_word,
    sentence_units,
    subsample,
    video_only_windows,
    visual_sentence,
)
from videobert.utils.errors import ConfigError

CLIP = 1.5  # seconds per clip in the hand-made tables
VISUAL_WORDS = 8  # k=2, depth=3
# The ingest stage marks a finished manifest with this key; load_manifest refuses one without it.
_MANIFEST_COMPLETE = {b"videobert.ingest.complete": b"1"}


FEATURE_DIM = 6


def write_work_dir(
    root: Path,
    videos: dict[str, tuple[str | None, list[int], list[tuple[float, float, str]]]],
    with_features: bool = False,
) -> Path:
    """A work directory with manifest, sentences, tokens (clips of 1.5 s) and an 8-word vocabulary (fitted on random
    features: only its size and hash matter here); with ``with_features``, also clip features (`clip_feature`,
    FEATURE_DIM wide) in two shards and clips.parquet.

    ``videos`` maps a video id to (split, visual tokens of its clips, sentences as (start, end, text)).
    """
    root.mkdir(parents=True, exist_ok=True)
    manifest, sentences, tokens = [], [], []
    for video, (split, clip_tokens, video_sentences) in sorted(videos.items()):
        manifest.append({
            "video": video, "path": f"/corpus/{video}", "duration": CLIP * len(clip_tokens), "fps": 20.0, "width": 32,
            "height": 32, "num_frames": 30 * len(clip_tokens), "rotation": 0, "codec": "h264", "container": "mp4",
            "num_audio_streams": 0, "num_subtitle_streams": 0, "size_bytes": 1, "mtime": 0.0, "transcript": None,
            "split": split,
        })  # fmt: skip
        for i, token in enumerate(clip_tokens):
            tokens.append({"video": video, "clip": i, "start": CLIP * i, "end": CLIP * (i + 1), "token": token})
        for i, (start, end, text) in enumerate(video_sentences):
            sentences.append({"video": video, "index": i, "start": start, "end": end, "text": text, "source": "x.srt"})
    features = np.random.default_rng(0).normal(size=(200, 6)).astype(np.float32)
    vocab = VisualTokenizer(VisualVocabConfig(k=2, depth=3)).fit(features)
    vocab.save_pretrained(root / "vocab")
    pq.write_table(pa.Table.from_pylist(manifest, schema=MANIFEST.with_metadata(_MANIFEST_COMPLETE)), root / "manifest.parquet")
    pq.write_table(pa.Table.from_pylist(sentences, schema=SENTENCES), root / "sentences.parquet")
    token_meta = {META_VOCAB_HASH: vocab.content_hash.encode(), META_FEATURES: b"hand-made"}
    pq.write_table(pa.Table.from_pylist(tokens, schema=TOKENS.with_metadata(token_meta)), root / "tokens.parquet")
    if with_features:
        write_clip_features(root, tokens)
    return root


def clip_feature(token: int, clip: int) -> np.ndarray:
    """A clip's hand-made feature: its visual word in the first dimensions, its clip index in the last, so that two
    clips of one video differ."""
    vector = np.zeros(FEATURE_DIM, dtype=np.float32)
    vector[token % (FEATURE_DIM - 1)] = 1.0 + token
    vector[-1] = 0.1 * clip
    return vector


def write_clip_features(root: Path, tokens: list[dict]) -> None:
    """features/ (meta.json, two shards) and clips.parquet for the clips of ``tokens`` (rows in video, clip order)."""
    (root / "features").mkdir(exist_ok=True)
    (root / "features" / "meta.json").write_text(json.dumps({"backbone": "hand-made", "dim": FEATURE_DIM}))
    half = len(tokens) // 2
    index = []
    for shard, part in enumerate((tokens[:half], tokens[half:])):
        name = f"shard-{shard:05d}"
        vectors = np.stack([clip_feature(t["token"], t["clip"]) for t in part]).astype(np.float16)
        np.save(root / "features" / f"{name}.npy", vectors)
        rows = [{"video": t["video"], "clip": t["clip"], "start": t["start"], "end": t["end"], "shard": f"{name}.npy",
                 "row": i} for i, t in enumerate(part)]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows, schema=CLIPS), root / "features" / f"{name}.parquet")
        index += rows
    pq.write_table(pa.Table.from_pylist(index, schema=CLIPS), root / "clips.parquet")


@pytest.fixture(scope="module")
def tokenizer() -> VideoBertTokenizer:
    text = AutoTokenizer.from_pretrained(default_text_checkpoint())
    config = VideoBertConfig(text_vocab_size=len(text), visual_vocab_size=VISUAL_WORDS, cls_token_id=text.cls_token_id,
                             sep_token_id=text.sep_token_id, mask_token_id=text.mask_token_id,
                             pad_token_id=text.pad_token_id)  # fmt: skip
    return VideoBertTokenizer(text, config)


# Four narrated videos, each with its own noun and its own two visual words, so that an example's text and visual
# tokens tell which video they came from; one video without speech; held-out and test videos.
NOUNS = ["tomato", "carrot", "onion", "potato", "lemon", "apple"]


def narrated(owner: int, clips: int, split: str | None) -> tuple[str | None, list[int], list[tuple[float, float, str]]]:
    words = [2 * (owner % 4), 2 * (owner % 4) + 1]
    clip_tokens = [words[i % 2] for i in range(clips)]
    sentences = [(CLIP * k + 0.2, CLIP * k + 3.2, f"now we cut the {NOUNS[owner]}") for k in range(0, clips - 2, 2)]
    return split, clip_tokens, sentences


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    videos = {f"n{i}": narrated(i, 12 + 2 * i, "train" if i % 2 else None) for i in range(4)}
    videos["quiet"] = ("train", [i % VISUAL_WORDS for i in range(40)], [])
    videos["held0"] = narrated(4, 10, "val")
    videos["held1"] = narrated(5, 10, "val")
    videos["test0"] = narrated(0, 10, "test")
    return write_work_dir(tmp_path_factory.mktemp("work"), videos)


def owner_of_text(tokenizer: VideoBertTokenizer, ids: list[int]) -> int:
    words = tokenizer.text_tokenizer.convert_ids_to_tokens([i for i in ids if tokenizer.config.is_text(i)])
    return next(NOUNS.index(w) for w in words if w in NOUNS)


def owners_of_visual(tokenizer: VideoBertTokenizer, ids: list[int]) -> set[int]:
    return {int(tokenizer.config.id_to_visual_token(i)) // 2 for i in ids if tokenizer.config.is_visual(i)}


# ---------------------------------------------------------------------------------------------- units and regimes


def record(tokens: list[int], sentences=()) -> VideoRecord:
    n = len(tokens)
    starts = CLIP * np.arange(n)
    return VideoRecord("v", starts, starts + CLIP, np.asarray(tokens, dtype=np.int64), list(sentences))


def test_visual_sentence_takes_clips_whose_midpoint_is_inside():
    r = record([10, 11, 12, 13, 14])  # midpoints 0.75, 2.25, 3.75, 5.25, 6.75
    assert visual_sentence(r, 1.0, 4.0).tolist() == [11, 12]
    assert visual_sentence(r, 0.75, 3.75).tolist() == [10, 11]  # [start, end): start included, end excluded
    # A sentence shorter than a clip contains no midpoint: the clips it overlaps.
    assert visual_sentence(r, 1.6, 2.0).tolist() == [11]
    assert visual_sentence(r, 2.9, 3.1).tolist() == [11, 12]
    assert visual_sentence(r, 8.0, 9.0).tolist() == []  # narration after the last clip


def test_sentence_units_concatenate_neighbours():
    sentences = [(0.0, 1.4, "a"), (1.6, 2.9, "b"), (3.1, 4.4, "c"), (4.6, 5.9, "d"), (6.1, 7.4, "e")]
    r = record([0, 1, 2, 3, 4], sentences)
    single = sentence_units(r, None, max_concat=3)
    assert [u.text for u in single] == ["a", "b", "c", "d", "e"]
    assert [u.visual.tolist() for u in single] == [[0], [1], [2], [3], [4]]
    sizes = set()
    for seed in range(50):
        units = sentence_units(r, np.random.default_rng(seed), max_concat=3)
        assert " ".join(u.text for u in units) == "a b c d e"  # every sentence once, in order
        for u in units:
            words = u.text.split()
            sizes.add(len(words))
            first, last = "abcde".index(words[0]), "abcde".index(words[-1])
            assert u.visual.tolist() == list(range(first, last + 1))  # the joint window's clips
    assert sizes == {1, 2, 3}


def test_subsample_stride_between_one_and_five():
    tokens = np.arange(40)
    strides = set()
    for seed in range(300):
        out = subsample(tokens, np.random.default_rng(seed), max_stride=5)
        stride = int(out[1] - out[0])
        assert 1 <= stride <= 5 and out[0] < stride
        assert out.tolist() == tokens[out[0] :: stride].tolist()
        strides.add(stride)
    assert strides == {1, 2, 3, 4, 5}
    for n in (1, 2, 3, 5):  # short visual sentences keep at least two tokens
        for seed in range(20):
            assert len(subsample(np.arange(n), np.random.default_rng(seed), 5)) >= min(n, 2)


def test_video_only_windows_of_sixteen():
    tokens = np.arange(40)
    assert [w.tolist() for w in video_only_windows(tokens, 16, None, 5)] == [list(range(16)), list(range(16, 32))]
    assert [w.tolist() for w in video_only_windows(np.arange(10), 16, None, 5)] == [list(range(10))]
    for seed in range(30):
        windows = video_only_windows(np.arange(200), 16, np.random.default_rng(seed), 5)
        assert windows and all(len(w) == 16 for w in windows)
        strides = {int(s) for w in windows for s in np.diff(w)}
        assert len(strides) == 1 and 1 <= strides.pop() <= 5


def test_splits(work):
    corpus = PretrainCorpus.from_work_dir(work)
    assert corpus.train_videos == ("n0", "n1", "n2", "n3", "quiet")  # split train and no split
    assert corpus.eval_videos == ("held0", "held1")


def test_eval_regimes_exact(work, tokenizer):
    """Every held-out sentence in every regime, not augmented: the exact sequences."""
    corpus = PretrainCorpus.from_work_dir(work)
    config = PretrainDataConfig(batch_size=4, shuffle_buffer=8)
    examples = [e for batch in PretrainStream(corpus, corpus.eval_videos, tokenizer, config, train=False) for e in batch]
    # held0 (noun 4) shows visual words 0, 1 in turn, held1 (noun 5) words 2, 3. Their sentences are
    # [1.5 k + 0.2, 1.5 k + 3.2) for k = 0, 2, 4, 6: the clip midpoints 1.5 k + 0.75 and 1.5 k + 2.25 lie inside,
    # so every visual sentence is clips k, k + 1, i.e. both of the video's words.
    words = {4: [0, 1], 5: [2, 3]}
    for owner, other in ((4, 5), (5, 4)):
        text = f"now we cut the {NOUNS[owner]}"
        mine = [e for e in examples if e.regime != VIDEO and owner_of_text(tokenizer, e.input_ids) == owner]
        assert [e.input_ids for e in mine if e.regime == TEXT] == [tokenizer.encode(text)["input_ids"]] * 4
        positive = tokenizer.encode(text, words[owner])
        pairs = [e for e in mine if e.regime == TEXT_VIDEO]
        assert [e.input_ids for e in pairs if e.alignment_label == ALIGNED] == [positive["input_ids"]] * 4
        assert all(e.token_type_ids == positive["token_type_ids"] for e in pairs)
        negative = tokenizer.encode(text, words[other])["input_ids"]  # the other held-out video's visual sentence
        assert [e.input_ids for e in pairs if e.alignment_label == NOT_ALIGNED] == [negative] * 4
    video = sorted(e.input_ids for e in examples if e.regime == VIDEO)
    assert video == sorted([tokenizer.encode(None, w)["input_ids"] for w in words.values()] * 4)
    assert all(e.alignment_label == -100 for e in examples if e.regime != TEXT_VIDEO)
    assert len(examples) == 2 * 4 * 4  # 2 videos x 4 sentences x (text, video, aligned pair, negative pair)


def test_video_without_speech_gives_windows_of_sixteen(work, tokenizer):
    corpus = PretrainCorpus.from_work_dir(work)
    config = PretrainDataConfig(batch_size=4, shuffle_buffer=8, max_stride=1)
    stream = PretrainStream(corpus, ["quiet"], tokenizer, config, train=True)
    examples = [e for batch in itertools.islice(stream, 4) for e in batch]  # 2 windows an epoch
    offset = tokenizer.config.visual_token_offset
    quiet = [i % VISUAL_WORDS for i in range(40)]
    windows = [[offset + t for t in quiet[:16]], [offset + t for t in quiet[16:32]]]
    assert all(e.regime == VIDEO and e.input_ids[2:-1] in windows for e in examples)
    assert all(e.input_ids[:2] == [tokenizer.config.cls_token_id, tokenizer.config.visual_separator_token_id]
               for e in examples)  # fmt: skip


def test_training_regimes_mix_and_negatives_come_from_other_videos(work, tokenizer):
    corpus = PretrainCorpus.from_work_dir(work)
    config = PretrainDataConfig(batch_size=8, shuffle_buffer=32, chunk_videos=2)
    stream = PretrainStream(corpus, [v for v in corpus.train_videos if v != "quiet"], tokenizer, config, train=True)
    examples = [e for batch in itertools.islice(stream, 150) for e in batch]
    counts = np.bincount([e.regime for e in examples], minlength=3) / len(examples)
    assert np.allclose(counts, [0.25, 0.25, 0.5], atol=0.05)
    pairs = [e for e in examples if e.regime == TEXT_VIDEO]
    negatives = [e for e in pairs if e.alignment_label == NOT_ALIGNED]
    assert abs(len(negatives) / len(pairs) - 0.5) < 0.06
    for e in pairs:
        text_owner, visual_owners = owner_of_text(tokenizer, e.input_ids), owners_of_visual(tokenizer, e.input_ids)
        assert len(visual_owners) == 1
        assert (visual_owners == {text_owner}) == (e.alignment_label == ALIGNED)


# ---------------------------------------------------------------------------------------------- masking


def masking_batch(tokenizer: VideoBertTokenizer, n: int) -> list[PretrainExample]:
    """Text–video sequences with 20 words and 20 visual tokens each, seeds 0..n-1."""
    rng = np.random.default_rng(0)
    text = "now let me show you how to cut the tomato into small pieces and then we pour the water in the pan"
    out = []
    for seed in range(n):
        encoded = tokenizer.encode(text, rng.integers(0, VISUAL_WORDS, 20).tolist())
        out.append(PretrainExample(encoded["input_ids"], encoded["token_type_ids"], TEXT_VIDEO, ALIGNED, seed))
    return out


def test_masking_statistics(tokenizer):
    config = tokenizer.config
    collator = MaskingCollator(tokenizer)
    examples = masking_batch(tokenizer, 2000)
    batch = collator(examples)
    original = np.array([e.input_ids for e in examples])
    ids, labels = batch["input_ids"].numpy(), batch["labels"].numpy()
    masked = labels != -100
    special = np.isin(original, list(config.special_tokens.values()))
    assert not masked[special].any()  # [CLS], [SEP], [>] never predicted
    assert (labels[masked] == original[masked]).all()
    # A random visual word equals the original one time in VISUAL_WORDS; among ~30k WordPieces that is negligible.
    for side, same_by_chance in ((config.is_text(original) & ~special, 0.0), (config.is_visual(original), 1 / VISUAL_WORDS)):
        assert abs(masked[side].mean() - 0.15) < 0.005
        chosen = masked & side
        as_mask = ids[chosen] == config.mask_token_id
        kept = ids[chosen] == original[chosen]
        assert abs(as_mask.mean() - 0.8) < 0.015
        assert abs(kept.mean() - 0.1 * (1 + same_by_chance)) < 0.012
        assert abs((~as_mask & ~kept).mean() - 0.1 * (1 - same_by_chance)) < 0.012
    # Random replacements come from the same modality: text from non-special WordPiece, visual from visual words.
    text_replaced = masked & config.is_text(original) & (ids != config.mask_token_id) & (ids != original)
    visual_replaced = masked & config.is_visual(original) & (ids != config.mask_token_id) & (ids != original)
    assert config.is_text(ids[text_replaced]).all() and config.is_visual(ids[visual_replaced]).all()
    words = tokenizer.text_tokenizer.convert_ids_to_tokens(ids[text_replaced].tolist())
    assert not any(w.startswith("[") and w.endswith("]") for w in words)
    # Unmasked positions are untouched.
    assert (ids[~masked] == original[~masked]).all()


def test_masking_is_a_function_of_the_example_seed(tokenizer):
    collator = MaskingCollator(tokenizer)
    examples = masking_batch(tokenizer, 6)
    together = collator(examples)
    alone = collator(examples[3:4])
    assert (together["input_ids"][3] == alone["input_ids"][0]).all()
    assert (together["labels"][3] == alone["labels"][0]).all()


def test_padding_is_never_masked_and_batches_pad_to_their_longest(tokenizer):
    long = tokenizer.encode("cut the tomato into small pieces", [1, 2, 3])
    short = tokenizer.encode(None, [4])
    examples = [PretrainExample(e["input_ids"], e["token_type_ids"], r, seed=s)
                for s in range(200) for e, r in ((long, TEXT_VIDEO), (short, VIDEO))]  # fmt: skip
    batch = MaskingCollator(tokenizer, mask_prob=0.9)(examples)
    assert batch["input_ids"].shape == (400, len(long["input_ids"]))
    padding = batch["attention_mask"] == 0
    assert padding.any() and (batch["labels"][padding] == -100).all()
    assert (batch["input_ids"][padding] == tokenizer.config.pad_token_id).all()
    assert batch["regime"].tolist() == [TEXT_VIDEO, VIDEO] * 200


def test_content_word_bias(tokenizer):
    examples = masking_batch(tokenizer, 1500)
    original = np.array([e.input_ids for e in examples])
    special = np.isin(original[0], list(tokenizer.config.special_tokens.values()))
    text = tokenizer.config.is_text(original[0]) & ~special  # the same text in every example
    words = np.array(tokenizer.text_tokenizer.convert_ids_to_tokens(original[0][text].tolist()))
    content = np.zeros_like(text)
    content[np.flatnonzero(text)] = [is_content_word(w) for w in words]
    assert set(words[content[text]]) == {"show", "cut", "tomato", "small", "pieces", "pour", "water", "pan"}
    shares = {}
    for weight in (1.0, 4.0):
        labels = MaskingCollator(tokenizer, content_word_weight=weight)(examples)["labels"].numpy()
        masked = labels != -100
        assert abs(masked[:, text].mean() - 0.15) < 0.005  # the same rate
        shares[weight] = masked[:, content].sum() / masked[:, text].sum()
    assert shares[1.0] == pytest.approx(content[text].mean(), abs=0.03)
    assert shares[4.0] > shares[1.0] + 0.2


# ---------------------------------------------------------------------------------------------- streaming


def test_shuffle_buckets_bounded_complete_and_sorted():
    rng = np.random.default_rng(0)
    buckets = ShuffleBuckets(capacity=64, batch_size=8, rng=np.random.default_rng(1))
    lengths = rng.integers(3, 100, 1000)
    released = []
    for i, n in enumerate(lengths):
        released += list(buckets.push(PretrainExample([0] * int(n), [0] * int(n), TEXT, seed=i)))
        assert len(buckets) < 64
    released += list(buckets.flush())
    seeds = sorted(e.seed for batch in released for e in batch)
    assert seeds == list(range(1000))  # every example exactly once
    assert all(len(batch) == 8 for batch in released[:-1])
    padded = sum(8 * max(len(e) for e in batch) for batch in released)
    random_batches = lengths[: len(lengths) // 8 * 8].reshape(-1, 8)
    assert padded < 0.75 * (8 * random_batches.max(axis=1)).sum()  # far less padding than random batches


def test_stream_reads_chunks_and_keeps_a_bounded_buffer(work, tokenizer, monkeypatch):
    reads = []
    read_table = pq.read_table

    def recording_read(path, *args, **kwargs):
        table = read_table(path, *args, **kwargs)
        reads.append((Path(path).name, table.num_rows, set(table["video"].to_pylist())))
        return table

    peak = [0]

    class RecordingBuckets(ShuffleBuckets):
        def push(self, example):
            peak[0] = max(peak[0], len(self) + 1)
            return super().push(example)

    monkeypatch.setattr(data_module, "read_parquet", recording_read)
    monkeypatch.setattr(data_module, "ShuffleBuckets", RecordingBuckets)
    corpus = PretrainCorpus.from_work_dir(work)
    config = PretrainDataConfig(batch_size=2, shuffle_buffer=6, chunk_videos=2)
    stream = PretrainStream(corpus, corpus.train_videos, tokenizer, config, train=True)
    batches = list(itertools.islice(stream, 60))  # several epochs
    assert len(batches) == 60 and peak[0] <= 6
    total_tokens = pq.read_metadata(corpus.tokens).num_rows
    token_reads = [(rows, videos) for name, rows, videos in reads if name == "tokens.parquet"]
    assert len(token_reads) >= 6  # 5 videos in chunks of 2: 3 reads an epoch
    assert all(len(videos) <= 2 and rows < total_tokens / 2 for rows, videos in token_reads)


def test_sharding_partitions_videos_over_ranks_and_workers(work, tokenizer, monkeypatch):
    corpus = PretrainCorpus.from_work_dir(work)
    config = PretrainDataConfig(batch_size=2, shuffle_buffer=4)
    videos = [f"v{i:02d}" for i in range(23)]
    seen = []
    for rank in range(3):
        for worker in range(2):
            info = types.SimpleNamespace(num_workers=2, id=worker)
            monkeypatch.setattr(data_module, "get_worker_info", lambda info=info: info)
            stream = PretrainStream(corpus, videos, tokenizer, config, train=True, rank=rank, world_size=3)
            assert stream.shard() == (rank * 2 + worker, 6)
            seen.append(set(stream.shard_videos()))
    assert set().union(*seen) == set(videos) and sum(map(len, seen)) == len(videos)
    monkeypatch.setattr(data_module, "get_worker_info", lambda: None)
    # The examples of a rank come only from its videos (each narrated video has its own noun).
    narrated_videos = ["n0", "n1", "n2", "n3"]
    for rank in range(2):
        stream = PretrainStream(corpus, narrated_videos, tokenizer, config, train=True, rank=rank, world_size=2)
        mine = {int(v[1:]) for v in stream.shard_videos()}
        texts = {owner_of_text(tokenizer, e.input_ids) for b in itertools.islice(stream, 40) for e in b
                 if e.regime != VIDEO}  # fmt: skip
        assert texts == mine
    with pytest.raises(ConfigError, match="cannot feed"):
        next(iter(PretrainStream(corpus, ["n0"], tokenizer, config, train=True, rank=1, world_size=2)))


def test_config_validation():
    for bad, message in [
        (dict(batch_size=0), "batch_size"),
        (dict(text_weight=0, video_weight=0, text_video_weight=0), "regime weights"),
        (dict(video_weight=-1), "regime weights"),
        (dict(negative_prob=1.5), "negative_prob"),
        (dict(mask_prob=-0.1), "mask_prob"),
        (dict(content_word_weight=0.5), "content_word_weight"),
        (dict(batch_size=32, shuffle_buffer=40), "two batches"),
        (dict(max_length=3), "max_length"),
    ]:
        with pytest.raises(ConfigError, match=message):
            PretrainDataConfig(**bad)
