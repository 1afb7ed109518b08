"""``videobert train-encoder``: learn a clip encoder (`model/clip_encoder.py`) from the work directory's own videos.

setup (decode the training videos' clips once into a uint8 cache, pair each clip with the sentences said around
it) -> train (seeded batches of a few videos x a few clips; the weighted sum of the objectives below; AdamW with a
cosine schedule; checkpoints to resume from) -> save (the encoder alone, in Hugging Face layout, as
`extract --backbone encoder:OUT` reads it).

Objectives, combinable by weight:

* **narration contrast** (MIL-NCE, Miech et al. 2020): a clip against the sentences whose time window, widened by
  `slack` seconds (ASR timing is loose), overlaps it: every overlapping sentence is a positive, every other sentence
  of the batch a negative. Batches hold several clips of each video, so the hardest negatives share the clip's
  background and lighting and differ only in what happens and what is named: what the vocabulary must keep.
* **masked frames** (seed 004): spans of frame states are replaced by a learned token; the temporal convolutions
  must predict them back (InfoNCE against every frame of the batch, so collapse does not pay).
* **next frame**: the causal temporal state at t predicts the frame state at t + 1 (InfoNCE likewise).

Like `pretrain`, only videos of split train (or without a split) are read, so every held-out figure stays honest.
Every batch is a pure function of (seed, step), so a resumed run draws the same batches an uninterrupted one would.
"""
from __future__ import annotations

import os
import re
import shutil
import time
import warnings as warnings_module
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import read_json, write_json
from videobert.utils.lock import LOCK_FILE, locked
from videobert.utils.stage import StageReport
from videobert.workdir import WorkDir

if TYPE_CHECKING:
    import torch

TRAIN_SPLITS = ("train", None)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_CHECKPOINT = re.compile(r"^step-(\d+)$")
TRAINING_FILE = "train_encoder.json"


def words_of(text: str) -> list[str]:
    """Lower-cased words of a sentence (the bag-of-words narration encoder's tokens)."""
    return _WORD.findall(text.lower())


@dataclass
class EncoderTrainingConfig:
    """How `train_encoder` trains; every field is a CLI option of the same name."""

    steps: int = 1500
    """Optimizer steps."""
    batch_videos: int = 8
    """Videos per batch."""
    clips_per_video: int = 8
    """Clips drawn from each video of a batch (the same-video negatives of the narration contrast)."""
    learning_rate: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    contrast_weight: float = 1.0
    """Weight of the narration contrast (MIL-NCE); 0 turns it off."""
    masked_frame_weight: float = 0.5
    """Weight of masked-frame prediction; 0 turns it off."""
    next_frame_weight: float = 0.5
    """Weight of next-frame prediction; 0 turns it off."""
    mask_ratio: float = 0.4
    """Fraction of a clip's sampled frames masked, as one contiguous span."""
    frame_temperature: float = 0.1
    """Temperature of the frame-prediction InfoNCE losses."""
    slack: float = 1.0
    """Seconds a sentence's window is widened by on each side when pairing it with clips."""
    augment: bool = True
    """Random crop, flip and brightness per clip (never a hue change: colours name objects)."""
    min_word_count: int = 2
    """Words said fewer times in the training narration are the unknown word of the bag-of-words encoder."""
    seed: int = 0
    save_steps: int = 250
    log_steps: int = 25

    def __post_init__(self) -> None:
        for name in ("steps", "batch_videos", "clips_per_video", "save_steps", "log_steps", "min_word_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        weights = (self.contrast_weight, self.masked_frame_weight, self.next_frame_weight)
        if min(weights) < 0 or max(weights) == 0:
            raise ConfigError("objective weights must be non-negative and at least one positive "
                              f"(contrast {weights[0]}, masked frame {weights[1]}, next frame {weights[2]})")
        if not 0 < self.mask_ratio < 1:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.learning_rate <= 0 or self.frame_temperature <= 0 or self.slack < 0:
            raise ConfigError("learning_rate and frame_temperature must be positive and slack non-negative")


# ------------------------------------------------------------------------------------------------- data


@dataclass
class ClipCache:
    """The training clips, decoded once: `frames` `(N, T, S, S, 3)` uint8 (memory-mapped from OUT/cache), with
    per clip its video index, start and end seconds."""

    frames: np.ndarray
    descriptors: np.ndarray | None  # (N, descriptor_dim) float32, when the encoder reads a descriptor
    video: np.ndarray  # (N,) index into `videos`
    start: np.ndarray  # (N,) seconds
    end: np.ndarray
    videos: list[str]


def build_clip_cache(work: Path, cache: Path, videos: list[tuple[str, str]], fps: float, clip_frames: int, size: int,
                     threads: int, descriptor: str | None = None) -> ClipCache:  # fmt: skip
    """Decode the clips of `videos` ((id, path) pairs) at `size` px into `cache` (rebuilt unless complete for the
    same inputs), with each clip's `descriptor` ("pixels" or None). A video that cannot be decoded is recorded in
    WORK/errors.jsonl and left out."""
    from videobert.data.video import ClipDecoder, clip_windows, probe
    from videobert.utils.errors import ErrorLog

    identity = {"videos": [v for v, _ in videos], "fps": fps, "clip_frames": clip_frames, "size": size,
                "descriptor": descriptor}  # fmt: skip
    index_file = cache / "index.json"
    if index_file.is_file() and (cache / "clips.npy").is_file():
        index = read_json(index_file)
        if index.get("identity") == identity:
            frames = np.load(cache / "clips.npy", mmap_mode="r")
            descriptors = np.load(cache / "descriptors.npy") if descriptor else None
            return ClipCache(frames, descriptors, np.asarray(index["video"], np.int64), np.asarray(index["start"]),
                             np.asarray(index["end"]), index["videos"])  # fmt: skip
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    decoder = ClipDecoder(fps=fps, clip_frames=clip_frames, size=(size, size), threads=threads)
    errors = ErrorLog(WorkDir(work).errors, stage="train-encoder")
    errors.clear_stage()
    counts = []
    for video, path in videos:  # the clip count bounds the memory map before anything is decoded
        try:
            counts.append(len(clip_windows(probe(path, verify=False).duration, clip_frames, fps)))
        except Exception as exc:  # noqa: BLE001 - one unreadable video is one error line, the rest goes on
            errors.record(video, InputError(path, str(exc)))
            counts.append(0)
    total = sum(counts)
    if total == 0:
        raise InputError(work, "no clip could be decoded from the training videos (split train or no split)")
    tmp = cache / "clips.npy.tmp"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(total, clip_frames, size, size, 3))
    vid, starts, ends = [], [], []
    n = 0
    for i, ((video, path), count) in enumerate(zip(videos, counts)):
        if not count:
            continue
        try:
            for clip in decoder.clips(path, video_id=video):
                if n >= total:  # a container that decodes longer than its header said
                    break
                out[n] = clip.frames
                vid.append(i), starts.append(clip.start), ends.append(clip.end)
                n += 1
        except Exception as exc:  # noqa: BLE001
            errors.record(video, InputError(path, str(exc)))
    out.flush()
    del out
    os.replace(tmp, cache / "clips.npy")
    frames = np.load(cache / "clips.npy", mmap_mode="r")[:n]
    descriptors = None
    if descriptor == "pixels":  # computed once on the decoded clips, as `extract` computes it
        from videobert.features.backbones import PixelsBackbone

        pixels = PixelsBackbone(clip_size=(size, size))
        descriptors = np.concatenate([pixels(np.asarray(frames[a:a + 256])) for a in range(0, n, 256)])
        np.save(cache / "descriptors.npy", descriptors)
    write_json(index_file, {"identity": identity, "videos": [v for v, _ in videos], "video": vid, "start": starts,
                            "end": ends})  # fmt: skip
    return ClipCache(frames, descriptors, np.asarray(vid, np.int64), np.asarray(starts), np.asarray(ends),
                     [v for v, _ in videos])  # fmt: skip


def narration_positives(
    clip_video: np.ndarray, clip_start: np.ndarray, clip_end: np.ndarray,
    sent_video: np.ndarray, sent_start: np.ndarray, sent_end: np.ndarray, slack: float,
) -> list[np.ndarray]:  # fmt: skip
    """For each clip, the indices of the sentences of its video whose window widened by `slack` seconds on each side
    overlaps the clip's `[start, end)` (MIL-NCE's positives)."""
    by_video: dict[int, np.ndarray] = {}
    for v in np.unique(sent_video):
        by_video[int(v)] = np.flatnonzero(sent_video == v)
    out = []
    for v, s, e in zip(clip_video, clip_start, clip_end):
        rows = by_video.get(int(v), np.zeros(0, np.int64))
        hit = (sent_start[rows] - slack < e) & (sent_end[rows] + slack > s)
        out.append(rows[hit])
    return out


def mil_nce(logits: "torch.Tensor", positives: "torch.Tensor") -> "torch.Tensor":
    """MIL-NCE over a `(clips, sentences)` score matrix with a boolean mask of positive pairs: for each clip with a
    positive, -log(sum of exp over its positives / sum over its row); likewise for each sentence over its column;
    the mean of the two directions."""
    import torch

    neg_inf = torch.finfo(logits.dtype).min
    rows = positives.any(dim=1)
    cols = positives.any(dim=0)
    pos = logits.masked_fill(~positives, neg_inf)
    clip_side = (logits.logsumexp(1) - pos.logsumexp(1))[rows].mean()
    text_side = (logits.logsumexp(0) - pos.logsumexp(0))[cols].mean()
    return (clip_side + text_side) / 2


def info_nce(pred: "torch.Tensor", target: "torch.Tensor", temperature: float) -> tuple["torch.Tensor", float]:
    """InfoNCE of `(N, D)` predictions against their `(N, D)` targets, every other target a negative; -> (loss,
    top-1 accuracy)."""
    import torch
    import torch.nn.functional as F

    logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / temperature  # (N, N)
    labels = torch.arange(len(pred), device=pred.device)
    return F.cross_entropy(logits, labels), float((logits.argmax(1) == labels).float().mean())


def augment_clips(clips: "torch.Tensor", rng: np.random.Generator) -> "torch.Tensor":
    """`(B, T, S, S, 3)` uint8 -> same, per clip: a random crop of 80-100 % of the side resized back, a horizontal
    flip half the time, brightness x0.85-1.15 (all channels alike, so no colour turns into another)."""
    import torch
    import torch.nn.functional as F

    b, t, s = clips.shape[:3]
    x = clips.permute(0, 1, 4, 2, 3).float()  # (B, T, S, S, 3) -> (B, T, 3, S, S)
    out = torch.empty_like(x)
    for i in range(b):
        side = int(round(s * rng.uniform(0.8, 1.0)))
        y0, x0 = (int(v) for v in rng.integers(0, s - side + 1, 2))
        crop = x[i, :, :, y0:y0 + side, x0:x0 + side]
        crop = F.interpolate(crop, size=(s, s), mode="bilinear", align_corners=False) if side != s else crop
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        out[i] = crop * float(rng.uniform(0.85, 1.15))
    return out.clamp_(0, 255).round_().to(torch.uint8).permute(0, 1, 3, 4, 2)  # back to (B, T, S, S, 3)


# ---------------------------------------------------------------------------------------------- training


def _batch(step: int, seed: int, by_video: list[np.ndarray], config: EncoderTrainingConfig,
           usable: np.ndarray) -> tuple[np.ndarray, np.random.Generator]:  # fmt: skip
    """Clip rows of step `step`: `batch_videos` videos, up to `clips_per_video` clips of each; a pure function of
    (seed, step). -> (rows, the step's generator for augmentation and masking)."""
    rng = np.random.default_rng((seed, step))
    chosen = rng.choice(usable, size=min(config.batch_videos, len(usable)), replace=False)
    rows = [rng.choice(by_video[v], size=min(config.clips_per_video, len(by_video[v])), replace=False) for v in chosen]
    return np.sort(np.concatenate(rows)), rng


def _span_mask(b: int, f: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """(B, F) bool: one contiguous span of max(1, round(ratio * F)) frames per clip. A span, not scattered frames:
    the motion channel of the frame after a masked one still holds the masked frame, so only a span's inner frames
    are truly hidden."""
    n = max(1, int(round(ratio * f)))
    start = rng.integers(0, f - n + 1, b)
    return (np.arange(f)[None] >= start[:, None]) & (np.arange(f)[None] < start[:, None] + n)


def _latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint (written under a temporary name and renamed when whole)."""
    found = [(int(m.group(1)), p) for p in folder.glob("step-*") if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    for _, path in sorted(found, reverse=True):
        if (path / "state.json").is_file() and (path / "model.safetensors").is_file():
            return path
    return None


def _save_checkpoint(folder: Path, step: int, model: Any, optimizer: Any, metrics: list[dict]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".step-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save_pretrained(tmp)
    # Optimizer state as tensors + JSON (never a pickle): AdamW keeps exp_avg, exp_avg_sq and step per parameter.
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, s in state["state"].items():
        for key, value in s.items():
            tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous().reshape(value.shape)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    scalars["param_groups"] = state["param_groups"]
    write_json(tmp / "state.json", {"step": step, "optimizer": scalars, "metrics": metrics})
    final = folder / f"step-{step}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    steps = sorted(int(m.group(1)) for p in folder.glob("step-*") if (m := _CHECKPOINT.match(p.name)))
    for older in steps[:-2]:  # the newest two are kept: one to resume from while the next is written
        shutil.rmtree(folder / f"step-{older}", ignore_errors=True)


def _load_checkpoint(path: Path, model: Any, optimizer: Any) -> tuple[int, list[dict]]:
    import torch
    from safetensors.torch import load_file

    from videobert.model.clip_encoder import ClipEncoderForPreTraining

    loaded = ClipEncoderForPreTraining.from_pretrained(path)
    model.load_state_dict(loaded.state_dict())
    state = read_json(path / "state.json")
    tensors = load_file(str(path / "optimizer.safetensors"))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["optimizer"]["param_groups"]})
    return int(state["step"]), list(state.get("metrics", []))


def _text_side(config: EncoderTrainingConfig, texts: list[str], text: str, device: str):
    """(model-config fields, per-sentence encoder input). `bow`: a word list from the training narration and
    each sentence's word ids; otherwise frozen sentence embeddings (mean of the last hidden states) of a BERT
    directory (`minilm`: the offline all-MiniLM-L6-v2)."""
    import torch

    if text == "bow":
        counts: dict[str, int] = {}
        bags = [words_of(t) for t in texts]
        for bag in bags:
            for w in bag:
                counts[w] = counts.get(w, 0) + 1
        vocab = ["[UNK]"] + sorted(w for w, c in counts.items() if c >= config.min_word_count)
        ids = {w: i for i, w in enumerate(vocab)}
        return {"text_vocab": vocab}, [np.asarray([ids.get(w, 0) for w in bag] or [0], np.int64) for bag in bags]
    from transformers import AutoModel, AutoTokenizer

    from videobert.model.modeling import default_text_checkpoint

    source = str(default_text_checkpoint()) if text == "minilm" else text
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        bert = AutoModel.from_pretrained(source).eval().to(device)
    except (OSError, ValueError) as exc:
        raise InputError(source, f"cannot load a text encoder ({exc})") from exc
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 256):
            enc = tokenizer(texts[i:i + 256], padding=True, truncation=True, max_length=64, return_tensors="pt").to(device)
            h = bert(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(((h * mask).sum(1) / mask.sum(1)).cpu().numpy())
    feats = np.concatenate(out) if out else np.zeros((0, bert.config.hidden_size), np.float32)
    return {"text_feature_dim": int(feats.shape[1]), "text_encoder": source}, list(feats)


@locked("out")
def train_encoder(
    work: Path,
    *,
    out: Path,
    steps: int = 1500,
    fps: float = 20.0,
    clip_frames: int = 30,
    image_size: int = 32,
    num_frames: int = 8,
    hidden_size: int = 128,
    temporal_layers: int = 2,
    causal: bool = False,
    descriptor: str = "pixels",
    text: str = "bow",
    contrast_weight: float = 1.0,
    masked_frame_weight: float = 0.5,
    next_frame_weight: float = 0.5,
    batch_videos: int = 8,
    clips_per_video: int = 8,
    learning_rate: float = 2e-3,
    slack: float = 1.0,
    augment: bool = True,
    seed: int = 0,
    save_steps: int = 250,
    log_steps: int = 25,
    threads: int = 0,
    device: str = "auto",
    overwrite: bool = False,
) -> StageReport:
    """Train a clip encoder on the work directory's own training videos and their narration, for
    `videobert extract --backbone encoder:OUT`.

    Objectives (weights combine them; 0 turns one off): narration contrast (MIL-NCE: a clip against the sentences
    said around it), masked-frame and next-frame prediction. Reads only videos of split train or without a split.
    Resumes from OUT/checkpoints; a finished OUT with the same settings is left alone.

    Args:
        work: Work directory holding manifest.parquet and sentences.parquet (from `videobert ingest`).
        out: Encoder directory to write (config.json, model.safetensors, train_encoder.json, runs/ for TensorBoard).
        steps: Optimizer steps.
        fps: Frame rate clips are sampled at; use the same for `extract`.
        clip_frames: Frames per clip; use the same for `extract`.
        image_size: Side of the square frames the encoder reads (32-64 on CPU).
        num_frames: Frames sampled per clip.
        hidden_size: Width of the clip vectors (the features `extract` writes).
        temporal_layers: Dilated temporal convolution blocks.
        causal: Temporal convolutions see only past frames.
        descriptor: pixels (the weight-free appearance + motion descriptor read beside the frames, through a learned
            projection) or none (frames only).
        text: Narration encoder of the contrast: bow (bag of words learnt here), minilm (frozen offline
            all-MiniLM-L6-v2) or a BERT directory (frozen).
        contrast_weight: Weight of the narration contrast; with no sentence in the training videos it is turned off
            (with a warning) when another objective has weight, else the run is refused.
        masked_frame_weight: Weight of masked-frame prediction.
        next_frame_weight: Weight of next-frame prediction.
        batch_videos: Videos per batch.
        clips_per_video: Clips per video in a batch.
        learning_rate: Peak AdamW learning rate (cosine decay after warm-up).
        slack: Seconds a sentence's window is widened by on each side when pairing it with clips.
        augment: Random crop, flip and brightness (never hue).
        seed: Seeds the weights and every batch.
        save_steps: Checkpoint every this many steps.
        log_steps: Average the losses over this many steps for the log, TensorBoard and train_encoder.json.
        threads: CPU threads for torch (0: the cores available to this process).
        device: auto (CUDA when available), cpu, cuda or cuda:N.
        overwrite: Replace an encoder in OUT trained with other settings.
    """
    import torch

    from videobert.data.ingest import load_manifest, load_sentences
    from videobert.data.video import available_cores
    from videobert.utils.device import resolve_device

    config = EncoderTrainingConfig(
        steps=steps, batch_videos=batch_videos, clips_per_video=clips_per_video, learning_rate=learning_rate,
        contrast_weight=contrast_weight, masked_frame_weight=masked_frame_weight, next_frame_weight=next_frame_weight,
        slack=slack, augment=augment, seed=seed, save_steps=save_steps, log_steps=log_steps,
    )  # fmt: skip
    if text != "bow" and text != "minilm" and not Path(text).is_dir():
        raise ConfigError(f"text must be bow, minilm or a BERT directory, got {text!r}")
    if descriptor not in ("pixels", "none"):
        raise ConfigError(f"descriptor must be pixels or none, got {descriptor!r}")
    if threads < 0:
        raise ConfigError(f"threads must be non-negative, got {threads}")
    from videobert.model.clip_encoder import ClipEncoderConfig

    # The network's settings are checked before anything is decoded.
    ClipEncoderConfig(image_size=image_size, num_frames=num_frames, hidden_size=hidden_size,
                      temporal_layers=temporal_layers, causal=causal)  # fmt: skip
    wd = WorkDir(work)
    out = Path(out)
    manifest = load_manifest(work).to_pylist()
    train = [(r["video"], r["path"]) for r in manifest if r["split"] in TRAIN_SPLITS]
    if not train:
        raise InputError(wd.manifest, "has no video of split train or without a split to train an encoder on")
    model_fields = {"image_size": image_size, "num_frames": num_frames, "hidden_size": hidden_size,
                    "temporal_layers": temporal_layers, "causal": causal,
                    "descriptor": None if descriptor == "none" else descriptor}  # fmt: skip
    identity = {"training": asdict(config), "model": dict(model_fields), "text": text, "fps": fps,
                "clip_frames": clip_frames, "videos": sorted(v for v, _ in train)}  # fmt: skip
    record = out / TRAINING_FILE
    if record.is_file():
        previous = read_json(record)
        if previous.get("identity") == identity and (out / "model.safetensors").is_file():
            return StageReport("train-encoder", skipped=1, outputs={"encoder": str(out)}, stats=previous.get("summary", {}))
        if not overwrite:
            changed = [k for k in identity if previous.get("identity", {}).get(k) != identity[k]]
            raise ConfigError(f"{out} holds an encoder trained with other settings ({', '.join(changed)}); "
                              "choose another directory or pass overwrite")  # fmt: skip
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        record.unlink()
    elif out.exists() and any(p.name not in ("checkpoints", "cache", "runs", "plan.json", LOCK_FILE) for p in out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no encoder training; choose a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)
    plan = out / "plan.json"
    if plan.is_file() and read_json(plan) != identity:  # checkpoints of other settings are not resumed
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    write_json(plan, identity)

    dev = resolve_device(device)
    torch.set_num_threads(threads or available_cores())
    began = time.perf_counter()
    cache = build_clip_cache(work, out / "cache", train, fps, clip_frames, image_size, threads=1,
                             descriptor=model_fields["descriptor"])  # fmt: skip
    if cache.descriptors is not None:
        model_fields["descriptor_dim"] = int(cache.descriptors.shape[1])

    # Sentences of the cached videos, and each clip's positives.
    sentences = load_sentences(work).to_pylist() if wd.sentences.exists() else []
    video_index = {v: i for i, v in enumerate(cache.videos)}
    sentences = [s for s in sentences if s["video"] in video_index and s["text"] and s["text"].strip()]
    use_contrast = config.contrast_weight > 0 and bool(sentences)
    warnings = []
    if config.contrast_weight > 0 and not sentences:
        if config.masked_frame_weight == 0 and config.next_frame_weight == 0:
            raise InputError(wd.sentences, "has no sentence of a training video, and the narration contrast is the "
                                           "only objective; give transcripts or weight masked/next-frame prediction")
        warnings.append("no narration in the training videos: the narration contrast is off")
    text_fields, text_inputs = _text_side(config, [s["text"] for s in sentences], text, dev) if sentences else ({"text_vocab": ["[UNK]"]}, [])
    positives = narration_positives(
        cache.video, cache.start, cache.end,
        np.asarray([video_index[s["video"]] for s in sentences], np.int64),
        np.asarray([s["start"] for s in sentences], np.float64), np.asarray([s["end"] for s in sentences], np.float64),
        config.slack,
    ) if sentences else [np.zeros(0, np.int64)] * len(cache.video)  # fmt: skip
    by_video = [np.flatnonzero(cache.video == v) for v in range(len(cache.videos))]
    usable = np.asarray([v for v, rows in enumerate(by_video) if len(rows)], np.int64)  # videos with a clip

    from transformers import get_cosine_schedule_with_warmup

    from videobert.model.clip_encoder import ClipEncoderForPreTraining

    torch.manual_seed(seed)
    model_config = ClipEncoderConfig(**model_fields, **text_fields)
    model = ClipEncoderForPreTraining(model_config).to(dev)
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "position" in n]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "position" not in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.learning_rate)  # fmt: skip
    schedule = get_cosine_schedule_with_warmup(optimizer, min(config.warmup_steps, config.steps // 10), config.steps)
    start_step, history = 0, []
    latest = _latest_checkpoint(out / "checkpoints")
    if latest is not None:
        start_step, history = _load_checkpoint(latest, model, optimizer)
        with warnings_module.catch_warnings():  # replaying the schedule, not skipping an optimizer step
            warnings_module.simplefilter("ignore", UserWarning)
            for _ in range(start_step):
                schedule.step()

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    writer = SummaryWriter(str(out / "runs"))
    model.train()
    clips_seen, t0 = 0, time.perf_counter()
    running: dict[str, list[float]] = {}
    with tqdm(total=config.steps, initial=start_step, unit="step", desc="train-encoder", disable=None) as bar:
        for step in range(start_step, config.steps):
            rows, rng = _batch(step, seed, by_video, config, usable)
            torch.manual_seed(hash((seed, step)) % (2**31))
            clips = torch.from_numpy(np.ascontiguousarray(cache.frames[rows]))
            if config.augment:
                clips = augment_clips(clips, rng)
            pixel_values = model.encoder.pixel_values(clips.to(dev))
            frames, _ = model.encoder.encode_frames(pixel_values)  # (B, F, D)
            descriptors = None if cache.descriptors is None else torch.from_numpy(cache.descriptors[rows]).to(dev)
            losses: dict[str, torch.Tensor] = {}
            stats: dict[str, float] = {}
            if use_contrast:
                pos_lists = [positives[r] for r in rows]
                sent_ids = np.unique(np.concatenate(pos_lists)) if any(len(p) for p in pos_lists) else np.zeros(0, np.int64)
                if len(sent_ids):
                    clip_z = model.embed_clips(model.encoder.pool(model.encoder.temporal_mix(frames), descriptors))
                    text_z = _embed_sentences(model, [text_inputs[j] for j in sent_ids], dev)
                    where = {int(j): k for k, j in enumerate(sent_ids)}
                    mask = torch.zeros(len(rows), len(sent_ids), dtype=torch.bool, device=dev)
                    for i, p in enumerate(pos_lists):
                        mask[i, [where[int(j)] for j in p]] = True
                    logits = model.logit_scale.clamp(max=4.6052).exp() * clip_z @ text_z.T  # (B, S)
                    losses["contrast"] = mil_nce(logits, mask) * config.contrast_weight
                    has = mask.any(1)
                    if has.any():
                        stats["contrast_top1"] = float(mask[has].gather(1, logits[has].argmax(1, keepdim=True)).float().mean())
            b, f, _ = frames.shape
            if config.masked_frame_weight > 0:
                span = torch.from_numpy(_span_mask(b, f, config.mask_ratio, rng)).to(dev)  # (B, F)
                masked_in = torch.where(span[..., None], model.mask_frame.to(frames.dtype), frames)
                pred = model.masked_head(model.encoder.temporal_mix(masked_in, causal=False)[span])
                loss, acc = info_nce(pred, frames[span].detach(), config.frame_temperature)
                losses["masked_frame"], stats["masked_frame_top1"] = loss * config.masked_frame_weight, acc
            if config.next_frame_weight > 0:
                causal_states = model.encoder.temporal_mix(frames, causal=True)
                pred = model.next_head(causal_states[:, :-1].reshape(-1, frames.shape[-1]))
                loss, acc = info_nce(pred, frames[:, 1:].reshape(-1, frames.shape[-1]).detach(), config.frame_temperature)
                losses["next_frame"], stats["next_frame_top1"] = loss * config.next_frame_weight, acc
            if not losses:
                continue
            total = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            clips_seen += len(rows)
            for k, v in {**{f"loss/{k}": float(v.detach()) for k, v in losses.items()}, "loss/total": float(total.detach()),
                         **{f"accuracy/{k}": v for k, v in stats.items()}}.items():  # fmt: skip
                running.setdefault(k, []).append(v)
            bar.update(1)
            done = step + 1
            if done % config.log_steps == 0 or done == config.steps:
                means = {k: float(np.mean(v)) for k, v in running.items()}
                for k, v in means.items():
                    writer.add_scalar(k, v, done)
                writer.add_scalar("lr", schedule.get_last_lr()[0], done)
                history.append({"step": done, **{k: round(v, 5) for k, v in means.items()}})
                bar.set_postfix(loss=f"{means['loss/total']:.3f}", refresh=False)
                running = {}
            if done % config.save_steps == 0 and done < config.steps:
                _save_checkpoint(out / "checkpoints", done, model, optimizer, history)
    writer.close()
    seconds = time.perf_counter() - t0

    model.encoder.save_pretrained(out)
    last = history[-1] if history else {}
    summary = {
        "clips": int(len(cache.video)), "videos": len(cache.videos), "sentences": len(sentences),
        "clips_with_narration": int(sum(len(p) > 0 for p in positives)),
        "steps": config.steps, "trained_steps_this_run": config.steps - start_step,
        "clips/s": round(clips_seen / seconds, 1) if seconds > 0 else 0.0,
        "seconds": round(time.perf_counter() - began, 1),
        **{k: v for k, v in last.items() if k != "step"},
    }  # fmt: skip
    write_json(record, {"identity": identity, "summary": summary, "history": history, "warnings": warnings})
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    for w in warnings:
        print(f"warning: {w}")
    return StageReport("train-encoder", done=1, outputs={"encoder": str(out)}, stats=summary)


def _embed_sentences(model: Any, inputs: list[np.ndarray], device: str):
    import torch

    if model.words is None:
        return model.embed_text(features=torch.from_numpy(np.stack(inputs)).float().to(device))
    offsets = np.cumsum([0] + [len(x) for x in inputs[:-1]])
    return model.embed_text(
        word_ids=torch.from_numpy(np.concatenate(inputs)).to(device), offsets=torch.from_numpy(offsets).to(device)
    )


__all__ = ["train_encoder", "EncoderTrainingConfig", "mil_nce", "info_nce", "narration_positives", "words_of"]
