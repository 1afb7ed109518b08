"""The `evaluate` stage: a pretrained model directory and a work directory -> metrics.json and a paper-style table.

Examples are the annotated segments of one split (segments.parquet) whose time window holds at least one clip; a
segment's visual tokens are those of the clips whose midpoint lies in its window (`segment_clip_index`), in clip
order. Segments without a clip have nothing to show the model and are counted, not evaluated.

metrics.json (both tasks)::

    task, split, model, work, segments (in the split), segments_without_video, evaluated (examples scored),
    methods: {method: {metric: value}}                                            zeroshot
             {method: {direction: {r1, r5, r10, median_rank}}}                    retrieval

zeroshot adds template, verb_labels and noun_labels (candidate counts); retrieval adds pool (segments ranked),
distinct_captions (the text queries; a caption's right answers are all its segments, see `tasks.retrieval`),
max_candidates and seed. Accuracies and recalls
are fractions in [0, 1]; the printed tables show percentages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from videobert.data.ingest import load_segments
from videobert.features.store import FeatureStore
from videobert.model import VideoBertConfig, VideoBertForPreTraining, require_tokenizer, visual_tokenizer_from_work_dir
from videobert.model.visual_input import visual_item
from videobert.tasks.retrieval import candidate_pool, distinct_captions, retrieval
from videobert.tasks.zeroshot import TEMPLATE, LabelSet, split_template, zero_shot
from videobert.tokenizer.quality import segment_clip_index
from videobert.tokenizer.stages import tokens_metadata
from videobert.utils.device import resolve_device
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import read_parquet, write_json
from videobert.utils.stage import StageReport, flatten
from videobert.workdir import WorkDir

STAGE = "evaluate"
TASKS = ("zeroshot", "retrieval", "caption", "qa", "forecast")
METRICS_FILE = "metrics.json"


def evaluate(
    model: Path,
    work: Path,
    task: str = "zeroshot",
    split: str = "test",
    template: str = TEMPLATE,
    batch_size: int = 64,
    max_candidates: int = 100,
    seed: int = 0,
    out: Path | None = None,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    labels_from: str = "all",
    device: str = "auto",
) -> StageReport:
    """Evaluate a pretrained VideoBERT on the annotated segments of one split; writes metrics.json.

    zeroshot: fill the template's verb and noun slots given the segment's visual tokens and rank the labels of the
    annotations (top-1 / top-5, next to the language prior: the same template without video), as in Table 1 of
    the paper. retrieval: text-to-video and video-to-text between captions and visual tokens, ranked by the
    alignment head and by pooled embeddings (R@1, R@5, R@10, median rank). caption: MODEL is a caption checkpoint
    (`videobert finetune --task caption`); its captions of the split are scored as in Table 3 of the paper (BLEU-3,
    BLEU-4, METEOR, ROUGE-L, CIDEr; `tasks.caption.evaluate_caption`), with captions.jsonl next to metrics.json.

    Args:
        model: Model directory written by `videobert pretrain` (task caption: the OUT or OUT/model of
            `videobert finetune --task caption`).
        work: Work directory; reads segments.parquet, tokens.parquet and vocab/, which must be the model's visual
            vocabulary.
        task: zeroshot (action classification by template filling), retrieval (captions against segments),
            caption (caption generation with a caption checkpoint), qa (multiple-choice questions about the steps,
            scored by the alignment head; or a fine-tuned QA checkpoint) or forecast (the next step's visual words,
            verb and noun from the steps before it).
        split: Annotation split whose segments are evaluated (e.g. train, val, test).
        template: Zero-shot sentence with two [MASK]s, the verb's first and the noun's second.
        batch_size: Sequences per forward pass.
        max_candidates: Retrieval: most segments in the candidate pool, a seeded random subsample (pairwise
            alignment scoring grows with the square of the pool).
        seed: Retrieval: seed of the candidate subsample.
        out: Folder for metrics.json (default MODEL/eval/TASK-SPLIT).
        num_beams: Caption: beam width (1: greedy).
        length_penalty: Caption: beam search length penalty (exponent on the length; > 1 favours longer captions).
        no_repeat_ngram_size: Caption: never repeat an n-gram of this size in a caption (0: no constraint).
        labels_from: Zeroshot: the split whose verbs and nouns are the candidates (all: every split). The paper's
            YouCook2 protocol takes them from the training captions (train); a segment's label that is not among
            them is left out of that slot's accuracy and counted (verb_unseen, noun_unseen).
        device: auto (CUDA when available), cuda or cpu.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "caption":
        # Imported here: the caption stage builds on this module's `segment_visual_tokens`.
        from videobert.tasks.caption import evaluate_caption

        return evaluate_caption(
            model, work, split=split, num_beams=num_beams, length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size, batch_size=batch_size, out=out, device=device,
        )  # fmt: skip
    if task == "qa":
        from videobert.tasks.qa import evaluate_qa

        return evaluate_qa(model, work, split=split, batch_size=batch_size, seed=seed, out=out, device=device)
    if task == "forecast":
        from videobert.tasks.forecast import evaluate_forecast

        return evaluate_forecast(model, work, split=split, template=template, batch_size=batch_size, out=out,
                                 device=device)  # fmt: skip
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if task == "retrieval" and max_candidates < 2:
        raise ConfigError(f"max_candidates must be at least 2, got {max_candidates}")
    torch_device = torch.device(resolve_device(device))
    wd = WorkDir(work)
    segments = load_segments(work)
    in_split = segments.filter(pc.equal(segments["split"], split))
    if in_split.num_rows == 0:
        present = sorted({s for s in segments["split"].to_pylist() if s is not None})
        raise InputError(
            wd.segments,
            f"no annotated segments in split {split!r} (splits present: {', '.join(present) or 'none'})",
        )

    network = VideoBertForPreTraining.from_pretrained(model)
    require_tokenizer(network, model)
    if task == "zeroshot":
        split_template(template, network.config.mask_token)  # a bad template fails before any work
    visual = segment_visual_inputs(work, in_split, network.config)
    has_video = np.array([len(v) > 0 for v in visual], dtype=bool)
    if not has_video.any():
        source = wd.tokens if network.config.reads_words else wd.clips
        raise InputError(source, f"no clip lies inside any of the {in_split.num_rows} segments of split {split!r}")
    examples = in_split.filter(pa.array(has_video))
    visual = [v for v in visual if len(v)]

    metrics: dict[str, Any] = {
        "task": task, "split": split, "model": str(model), "work": str(work), "segments": in_split.num_rows,
        "segments_without_video": int((~has_video).sum()),
    }  # fmt: skip
    network.eval().to(torch_device)
    with torch.inference_mode():
        if task == "zeroshot":
            metrics.update(_zero_shot(network, wd, segments, examples, visual, template, batch_size, labels_from))
        else:
            metrics.update(_retrieval(network, wd, examples, visual, batch_size, max_candidates, seed))

    out = Path(out) if out is not None else Path(model) / "eval" / f"{task}-{split}"
    write_json(out / METRICS_FILE, metrics)
    _print_table(metrics)
    return StageReport(
        STAGE,
        done=metrics["evaluated"],
        outputs={"metrics": str(out / METRICS_FILE)},
        stats={key: value for key, value in flatten(metrics).items() if key not in ("task", "model", "work")},
    )


def _zero_shot(
    network: VideoBertForPreTraining,
    wd: WorkDir,
    segments: pa.Table,
    examples: pa.Table,
    visual: list[np.ndarray],
    template: str,
    batch_size: int,
    labels_from: str = "all",
) -> dict[str, Any]:
    # Candidates from every split (the default), so that the label set does not depend on the split evaluated, or
    # from one split (the paper's YouCook2 protocol: the training captions).
    source = segments if labels_from == "all" else segments.filter(pc.equal(segments["split"], labels_from))
    labels, gold, unseen = {}, {}, {}
    for slot in ("verb", "noun"):
        if not any(v is not None and v.strip() for v in examples[slot].to_pylist()):
            raise InputError(wd.segments, f"no evaluated segment has a {slot} label; zero-shot needs verbs and nouns")
        if not any(v is not None and v.strip() for v in source[slot].to_pylist()):
            problem = f"no segment of split {labels_from!r} has a {slot} label to take candidates from"
            raise InputError(wd.segments, problem)
        labels[slot] = LabelSet.from_values(source[slot].to_pylist(), network.tokenizer.text_tokenizer)
        known = set(labels[slot].names)
        values = examples[slot].to_pylist()
        gold[slot] = [v if v is not None and v.strip() in known else None for v in values]
        unseen[f"{slot}_unseen"] = sum(bool(v and v.strip()) and g is None for v, g in zip(values, gold[slot]))
    methods = zero_shot(
        network, network.tokenizer, visual, gold["verb"], gold["noun"], labels["verb"], labels["noun"],
        template=template, batch_size=batch_size,
    )  # fmt: skip
    return {
        "evaluated": examples.num_rows,
        "template": template,
        "verb_labels": len(labels["verb"]),
        "noun_labels": len(labels["noun"]),
        **({"labels_from": labels_from, **unseen} if labels_from != "all" else {}),
        "methods": methods,
    }


def _retrieval(
    network: VideoBertForPreTraining,
    wd: WorkDir,
    examples: pa.Table,
    visual: list[np.ndarray],
    batch_size: int,
    max_candidates: int,
    seed: int,
) -> dict[str, Any]:
    all_captions = examples["caption"].to_pylist()
    captioned = [i for i, c in enumerate(all_captions) if c is not None and c.strip()]
    captions = [all_captions[i] for i in captioned]
    pool = candidate_pool(captions, max_candidates=max_candidates, seed=seed)
    texts = [captions[i] for i in pool]
    distinct = len(distinct_captions(texts))
    if distinct < 2:
        raise InputError(
            wd.segments,
            f"retrieval needs segments with at least 2 distinct captions and video in the split, found {len(pool)} "
            f"segments with {distinct} distinct captions",
        )
    methods = retrieval(network, network.tokenizer, texts, [visual[captioned[i]] for i in pool], batch_size)
    return {
        "evaluated": len(pool),
        "pool": len(pool),
        "distinct_captions": distinct,
        "max_candidates": max_candidates,
        "seed": seed,
        "methods": methods,
    }


def segment_clip_features(work: Path, segments: pa.Table) -> list[np.ndarray]:
    """For each segment (row order), the (clips, feature_dim) float32 features of its clips in clip order (the clips
    of `segment_clip_index`); reads only those rows of the memory-mapped shards."""
    store = FeatureStore(work)
    members = segment_clip_index(store.clips, segments)
    wanted = np.unique(np.concatenate(members)) if members else np.zeros(0, dtype=np.int64)
    vectors: dict[int, np.ndarray] = {}
    offset = 0
    for rows, array in store.iter_shards():
        in_shard = rows["row"].to_numpy()
        for index in wanted[(wanted >= offset) & (wanted < offset + rows.num_rows)]:
            vectors[int(index)] = np.asarray(array[in_shard[index - offset]], dtype=np.float32)
        offset += rows.num_rows
    empty = np.zeros((0, store.dim), dtype=np.float32)
    return [np.stack([vectors[int(i)] for i in m]) if len(m) else empty for m in members]


def segment_visual_inputs(work: Path, segments: pa.Table, config: VideoBertConfig) -> list[np.ndarray]:
    """For each segment (row order), its visual input as the model of `config` reads it (`model.visual_input`): the
    visual words of its clips (checked against the model's vocabulary), their clip features, or both."""
    wd = WorkDir(work)
    words = features = [None] * segments.num_rows
    if config.reads_words:
        visual_tokenizer = visual_tokenizer_from_work_dir(work, config)
        tokens_path = wd.require(wd.tokens, "tokenize")
        if tokens_metadata(tokens_path).get("vocab_hash") != visual_tokenizer.content_hash:
            raise ConfigError(
                f"{tokens_path} was made with another vocabulary than {wd.vocab}; run `videobert tokenize`"
            )
        words = segment_visual_tokens(tokens_path, segments)
    if config.reads_features:
        features = segment_clip_features(work, segments)
        if FeatureStore(work).dim != config.feature_dim:
            raise ConfigError(
                f"{wd.features}: clip features of width {FeatureStore(work).dim}, but the model was trained on "
                f"{config.feature_dim}; extract them with the model's backbone"
            )
    return [visual_item(config.reads_words, config.reads_features, w, f) for w, f in zip(words, features)]


def segment_visual_tokens(tokens_path: Path, segments: pa.Table) -> list[np.ndarray]:
    """For each segment (row order), the visual words of its clips in clip order; reads only its videos' rows."""
    videos = sorted(set(segments["video"].to_pylist()))
    columns = ["video", "clip", "start", "end", "token"]
    tokens = read_parquet(tokens_path, columns=columns, filters=[("video", "in", videos)])
    tokens = tokens.sort_by([("video", "ascending"), ("clip", "ascending")])
    words = tokens["token"].to_numpy()
    return [words[rows] for rows in segment_clip_index(tokens, segments)]


def _print_table(metrics: dict[str, Any]) -> None:
    """The paper-style table of `metrics`: Table 1 for zeroshot, R@K / median rank for retrieval."""
    from rich.console import Console
    from rich.table import Table

    methods = metrics["methods"]
    if metrics["task"] == "zeroshot":
        table = Table(
            title=f"VideoBERT zero-shot action classification, accuracy (%), split {metrics['split']}: "
            f"{metrics['evaluated']} segments, {metrics['verb_labels']} verbs, {metrics['noun_labels']} objects"
        )
        columns = {"verb top-1": "verb_top1", "verb top-5": "verb_top5",
                   "object top-1": "noun_top1", "object top-5": "noun_top5"}  # fmt: skip
        names = {"language_prior": "language prior", "videobert": "cross modal"}
        table.add_column("method", no_wrap=True)
        for header in columns:
            table.add_column(header, justify="right")
        for method, row in methods.items():
            table.add_row(names[method], *(f"{100 * row[key]:.1f}" for key in columns.values()))
    else:
        table = Table(
            title=f"VideoBERT retrieval, split {metrics['split']}: pool of {metrics['pool']} segments (seed "
            f"{metrics['seed']})"
        )
        for header in ("method", "direction", "R@1 (%)", "R@5 (%)", "R@10 (%)", "median rank"):
            table.add_column(header, justify="left" if header in ("method", "direction") else "right")
        for method, directions in methods.items():
            for direction, row in directions.items():
                table.add_row(
                    method, direction.replace("_", " "), *(f"{100 * row[k]:.1f}" for k in ("r1", "r5", "r10")),
                    f"{row['median_rank']:g}",
                )  # fmt: skip
    Console().print(table)
