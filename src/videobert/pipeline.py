"""``videobert run`` and ``videobert demo``: the whole VideoBERT pipeline on a corpus, stage by stage, with results a
person can judge. ``run`` takes any corpus of the contract (DESIGN.md §2) with a recipe chosen from it
(videobert.recipe); ``demo`` generates a MiniCook corpus and runs it with the demo's fixed recipe, through the same
code. Each stage is the public API function of the same name, so this module is also the reference for chaining them
from Python::

    (synth) -> (transcribe) -> ingest -> (train-encoder) -> extract -> vocab -> tokenize
                                                               (corpus, clip features, visual words)
    -> pretrain                                                (text, video and text-video regimes + alignment)
    -> evaluate zeroshot, evaluate retrieval                   (held-out test split)
    -> finetune verb+noun: pretrained vs re-initialised        (same architecture, data and budget; few-shot and all)
    -> captioning: VideoBERT, random encoder, clip features, VideoBERT + clip features and its random control
                                                               (same decoder and budget; one caption per step)
    -> results tables (terminal, OUT/results.md) and OUT/report.html

Outputs in OUT: (demo: corpus/), work/, model/ (the pretrained VideoBERT), eval/, finetune/, caption/, recipe.json,
summary.json (every number), results.md and report.html. Every stage skips or resumes finished work, so a second run
is fast. Which evaluations run depends on the annotations: without any, the results are the pretraining curves, the
alignment accuracy on held-out videos and the visual words with their clips.

The default (small) demo takes about five minutes on two CPU cores (README.md): a 2-layer, 256-wide BERT
from scratch over a WordPiece vocabulary trained on the narration (`pretrain --text-vocab`), since MiniLM's six
384-wide layers and 30k-word output layer are several times slower per step on CPU. Masking favours content words
(`content_word_weight`), because the narration is mostly chatter and zero-shot classification asks for verbs and
nouns (DESIGN.md §6); most examples are text-video pairs, the regime that links words to visual words; and a
quarter of the pairs are negatives instead of the paper's half: at this budget every negative pair teaches the model
that the video may be unrelated to the words, and held-out zero-shot accuracy fell from 0.69 / 0.74 (verb / noun
top-1, no negatives) to 0.36-0.40 / 0.61-0.64 with half negatives after 1,500 steps (BENCHMARKS.md, "pretraining
recipe"). The alignment head leaves chance only after about 2,000 steps (0.64-0.70 at 3,000).
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from videobert.recipe import DEMO_PRETRAIN, Recipe, apply_overrides, choose_recipe, survey
from videobert.utils.errors import ConfigError
from videobert.utils.lock import locked
from videobert.utils.io import atomic_open, read_json, write_json
from videobert.utils.stage import StageReport


@dataclass(frozen=True)
class DemoSize:
    """How big the generated corpus is and how long each model trains. ``small`` is what ``make demo`` runs."""

    videos: int
    width: int
    height: int
    pretrain_steps: int
    """Optimizer steps of pretraining (batch 32)."""
    finetune_epochs: int
    """Most epochs of segment classification (early stopping on val)."""
    caption_epochs: int
    """Most epochs of each captioning run (early stopping on val)."""


DEMO_SIZES: dict[str, DemoSize] = {
    "tiny": DemoSize(videos=12, width=64, height=64, pretrain_steps=20, finetune_epochs=1, caption_epochs=1),
    "small": DemoSize(videos=160, width=96, height=96, pretrain_steps=3000, finetune_epochs=8, caption_epochs=40),
    "medium": DemoSize(videos=400, width=96, height=96, pretrain_steps=10000, finetune_epochs=10, caption_epochs=40),
    "large": DemoSize(videos=1500, width=128, height=128, pretrain_steps=30000, finetune_epochs=10, caption_epochs=40),
}

FINETUNE_TARGET = "verb+noun"
FINETUNE_LR = 2e-4
# Labelled training segments per verb+noun pair (0: all): pretraining shows most where labels are few.
FINETUNE_BUDGETS = {"few-shot": 1, "all": 0}
RETRIEVAL_CANDIDATES = 100
# Targets of the small demo on its held-out videos (README, "What `make demo` shows").
TARGETS = {"zeroshot_top1": 0.5, "zeroshot_vs_prior": 2.0, "finetune_gain": 0.10, "retrieval_r1": 0.3}
RECIPE_FILE = "recipe.json"


@locked("out")
def run(
    corpus: Path,
    *,
    out: Path,
    budget_minutes: float = 10.0,
    steps: int = 0,
    recipe: Path | None = None,
    option: list[str] | None = None,
    seed: int = 0,
    device: str = "auto",
) -> StageReport:
    """Run the whole pipeline on a folder of videos (with or without subtitles and annotations) and report.

    (transcribe) -> ingest -> (train-encoder) -> extract -> vocab -> tokenize -> pretrain -> the evaluations the
    annotations allow (zero-shot classification with verbs and nouns, taken from captions where absent; retrieval
    with captions) -> OUT/results.md, OUT/report.html, OUT/summary.json. The recipe (clip length, vocabulary size,
    model, steps, evaluations) is chosen from the corpus and the budget, printed before any work and written to
    OUT/recipe.json; every stage skips finished work, so an interrupted run resumes where it stopped.

    Args:
        corpus: Corpus folder: videos at any depth, optional same-stem .srt/.vtt/.json transcripts, optional
            annotations.jsonl or YouCook2 JSON at its root. Nothing is written into it.
        out: Output folder (work/, model/, eval/, recipe.json, results.md, report.html, summary.json).
        budget_minutes: Time budget on 2 CPU cores; picks the model and the pretraining steps.
        steps: Pretraining steps (0: from the budget).
        recipe: JSON file of recipe fields that replace the chosen ones (an OUT/recipe.json, or a part of one).
        option: A stage option STAGE.NAME=VALUE, repeatable, e.g. --option pretrain.learning_rate=5e-4 --option
            extract.backbone=hf-image:DIR (stages: transcribe, ingest, extract, vocab, tokenize, pretrain, evaluate,
            finetune, captioning; names as in `videobert STAGE --help`, dashes or underscores).
        seed: Seed of every stochastic stage.
        device: auto (CUDA when available), cuda or cpu.
    """
    chosen = choose_recipe(survey(corpus), budget_minutes=budget_minutes, steps=steps, seed=seed)
    return execute(Path(corpus), Path(out), apply_overrides(chosen, recipe, option or []), device=device)


@locked("out")
def demo(
    out: Path = Path("demo_out"),
    size: str = "small",
    seed: int = 0,
    backbone: str = "pixels",
    encoder_steps: int = 1500,
    clip_frames: int = 15,
    k: int = 12,
    depth: int = 2,
    pretrain_steps: int = 0,
    captioning: bool = True,
    recipes: bool = False,
    device: str = "auto",
) -> StageReport:
    """Run the whole pipeline on a generated MiniCook corpus and report the results as the paper's tables.

    synth -> ingest -> extract -> vocab -> tokenize -> pretrain -> zero-shot classification and retrieval on the
    held-out test videos -> fine-tuning (pretrained vs re-initialised) -> captioning (pretrained encoder, random
    encoder, clip features, VideoBERT + clip features, random encoder + clip features) -> with `recipes`, next-step
    forecasting; prints the tables and writes OUT/results.md, OUT/report.html and OUT/summary.json. It is
    `videobert synth` followed by `videobert run` with the demo's fixed recipe.

    Args:
        out: Output folder (corpus/, work/, model/, eval/, finetune/, caption/, the results and the report).
        size: Corpus size and training budget, one of tiny, small, medium, large.
        seed: Seed for the corpus and every stochastic stage.
        backbone: Clip feature backbone (see `videobert extract --help`), or encoder: a clip encoder trained on the
            corpus's training videos first (`videobert train-encoder`, into OUT/encoder).
        encoder_steps: Training steps of the clip encoder with backbone encoder.
        clip_frames: Frames per clip at 20 fps. The paper's 30 (1.5 s) suits YouCook2's long steps; MiniCook's steps
            last 2-4 s, so the demo takes 0.75 s clips, which straddle fewer step boundaries (BENCHMARKS.md).
        k: Branching factor of the hierarchical k-means vocabulary.
        depth: Depth of the vocabulary tree (k**depth visual words).
        pretrain_steps: Pretraining steps; 0 uses the size's default.
        captioning: Also train and compare the captioning models.
        recipes: Generate a corpus whose steps follow recipes (`videobert synth --recipes`), so that next-step
            forecasting (`videobert evaluate|finetune ... --task forecast`) has something to find.
        device: auto (CUDA when available), cuda or cpu.
    """
    from videobert.data.synth import synth

    if size not in DEMO_SIZES:
        raise ConfigError(f"unknown demo size {size!r}; choose one of {', '.join(DEMO_SIZES)}")
    if pretrain_steps < 0:
        raise ConfigError(f"pretrain_steps must be non-negative, got {pretrain_steps}")
    spec = DEMO_SIZES[size]
    fixed = demo_recipe(spec, seed=seed, backbone=backbone, clip_frames=clip_frames, k=k, depth=depth,
                        pretrain_steps=pretrain_steps or spec.pretrain_steps, captioning=captioning, recipes=recipes)
    if backbone == "encoder":
        fixed = dataclasses.replace(fixed, backbone="pixels", train_encoder=True, encoder_steps=encoder_steps)
    out = Path(out)
    t0 = time.perf_counter()
    made = synth(out / "corpus", videos=spec.videos, seed=seed, width=spec.width, height=spec.height, recipes=recipes)
    synth_s = time.perf_counter() - t0
    print(f"[demo] synth: done={made.done} skipped={made.skipped} failed={made.failed} ({synth_s:.1f}s)")
    return execute(out / "corpus", out, fixed, device=device, name="demo", judge_targets=True,
                   first_timings={"synth": synth_s}, first_failed=made.failed)  # fmt: skip


def demo_recipe(spec: DemoSize, seed: int, backbone: str, clip_frames: int, k: int, depth: int, pretrain_steps: int,
                captioning: bool, recipes: bool) -> Recipe:  # fmt: skip
    """The demo's fixed recipe: every evaluation, on the generated corpus's own test split."""
    evaluations = ("zeroshot", "retrieval", "finetune") + (("forecast",) if recipes else ()) + (
        ("captioning",) if captioning else ())
    return Recipe(seed=seed, backbone=backbone, clip_frames=clip_frames, k=k, depth=depth,
                  pretrain_steps=pretrain_steps, pretrain=dict(DEMO_PRETRAIN), eval_split="test",
                  evaluations=evaluations, finetune_epochs=spec.finetune_epochs, caption_epochs=spec.caption_epochs,
                  notes=("the demo's fixed recipe",))  # fmt: skip


def execute(
    corpus: Path,
    out: Path,
    recipe: Recipe,
    device: str = "auto",
    name: str = "run",
    judge_targets: bool = False,
    first_timings: dict[str, float] | None = None,
    first_failed: int = 0,
) -> StageReport:
    """Every stage of `recipe` on `corpus`, results and report in `out` (`run` and `demo` both end here)."""
    from videobert.data.ingest import ingest, load_segments
    from videobert.features.extract import extract
    from videobert.tasks.evaluate import evaluate
    from videobert.tasks.finetune import finetune
    from videobert.tokenizer.quality import segment_token_report
    from videobert.tokenizer.stages import tokenize, vocab
    from videobert.training.pretrain import pretrain

    work, model = out / "work", out / "model"
    print(f"[{name}] recipe:")
    for line in recipe.describe():
        print(f"  {line}")
    write_json(out / RECIPE_FILE, recipe.to_json())
    timings: dict[str, float] = dict(first_timings or {})
    failed = first_failed
    skipped: dict[str, str] = {}

    def stage(label: str, fn: Callable[..., StageReport], *args: Any, options: str, **kwargs: Any) -> StageReport:
        nonlocal failed
        t0 = time.perf_counter()
        report = fn(*args, **{**kwargs, **recipe.stage_options(options)})
        timings[label] = time.perf_counter() - t0
        failed += report.failed
        print(f"[{name}] {label}: done={report.done} skipped={report.skipped} failed={report.failed} "
              f"({timings[label]:.1f}s)")  # fmt: skip
        return report

    if recipe.asr:
        from videobert.speech.transcribe import transcribe

        stage("transcribe", transcribe, corpus, work, asr=recipe.asr, only_with_audio=True, device=device,
              options="transcribe")  # fmt: skip
    ingested = stage("ingest", ingest, corpus, work, holdout=recipe.holdout, options="ingest")
    backbone = recipe.backbone
    if recipe.train_encoder:  # a clip encoder learnt from this corpus's own training videos
        from videobert.training.encoder import train_encoder

        stage("train-encoder", train_encoder, work, out=out / "encoder", steps=recipe.encoder_steps,
              clip_frames=recipe.clip_frames, seed=recipe.seed, device=device, options="train_encoder")  # fmt: skip
        backbone = f"encoder:{out / 'encoder'}"
    stage("extract", extract, work, backbone=backbone, clip_frames=recipe.clip_frames, options="extract")
    stage("vocab", vocab, work, k=recipe.k, depth=recipe.depth, seed=recipe.seed, options="vocab")
    stage("tokenize", tokenize, work, options="tokenize")
    segments = load_segments(work).to_pylist()
    labelled = [s for s in segments if s["verb"] and s["noun"]]
    quality = segment_token_report(work) if labelled else {}

    steps = recipe.pretrain_steps
    stage("pretrain", pretrain, work, out=model, max_steps=steps, seed=recipe.seed, device=device,
          eval_steps=max(1, steps // 6), save_steps=max(1, steps // 3), logging_steps=max(1, min(50, steps // 20)),
          overwrite=True, **recipe.pretrain, options="pretrain")  # fmt: skip

    split = recipe.eval_split
    in_split = [s for s in segments if s["split"] == split]
    available = {
        "zeroshot": any(s["verb"] and s["noun"] for s in in_split),
        "retrieval": sum(bool(s["caption"]) for s in in_split) >= 2,
        "finetune": any(s["split"] == "train" for s in labelled) and any(s["verb"] and s["noun"] for s in in_split),
        "captioning": any(s["caption"] for s in segments if s["split"] == "train") and any(s["caption"] for s in in_split),
    }
    available["forecast"] = available["finetune"]
    for evaluation in recipe.evaluations:
        if not available[evaluation]:
            skipped[evaluation] = f"the annotations give it nothing to score in split {split!r}"
    wanted = [e for e in recipe.evaluations if available[e]]
    if "zeroshot" in wanted:
        stage("zeroshot", evaluate, model, work, task="zeroshot", split=split, out=out / "eval" / "zeroshot",
              labels_from=recipe.zeroshot_labels_from, device=device, options="evaluate")  # fmt: skip
    if "retrieval" in wanted:
        stage("retrieval", evaluate, model, work, task="retrieval", split=split, max_candidates=RETRIEVAL_CANDIDATES,
              seed=recipe.seed, out=out / "eval" / "retrieval", device=device, options="evaluate")  # fmt: skip
    if "finetune" in wanted:
        for budget, few_shot in FINETUNE_BUDGETS.items():
            for init in ("pretrained", "random"):
                stage(f"finetune-{budget}-{init}", finetune, model, work, out / "finetune" / budget / init,
                      target=FINETUNE_TARGET, epochs=recipe.finetune_epochs, learning_rate=FINETUNE_LR,
                      few_shot=few_shot, patience=recipe.finetune_epochs, encoder=init, seed=recipe.seed,
                      device=device, options="finetune")  # fmt: skip
    if "forecast" in wanted:  # the next step follows from the steps before only in a recipe corpus
        stage("forecast-zeroshot", evaluate, model, work, task="forecast", split=split,
              out=out / "eval" / "forecast", device=device, options="evaluate")  # fmt: skip
        stage("forecast-finetune", finetune, model, work, out / "finetune" / "forecast", task="forecast",
              seed=recipe.seed, device=device, options="finetune")  # fmt: skip
    if "captioning" in wanted:
        from videobert.tasks.caption import caption_comparison

        stage("captioning", caption_comparison, model, work, out / "caption", epochs=recipe.caption_epochs,
              few_shot=FINETUNE_BUDGETS["few-shot"], seed=recipe.seed, device=device, options="captioning")  # fmt: skip
    for what, why in skipped.items():
        print(f"[{name}] skipped {what}: {why}")

    results = collect_results(out, quality, timings, videos=ingested.stats.get("videos", 0))
    results["recipe"] = recipe.to_json()
    results["skipped"] = skipped
    if judge_targets:
        results["targets"] = targets_met(results)
    write_json(out / "summary.json", results)
    tables = results_tables(results)
    _print_tables(tables)
    with atomic_open(out / "results.md", "w", encoding="utf-8") as fh:
        fh.write(markdown_tables(tables))
    write_report(out, results, tables, title=f"videobert {name}", by="pure" if labelled else "frequent")
    return StageReport(
        name, done=len(timings), failed=failed,
        outputs={"recipe": str(out / RECIPE_FILE), "summary": str(out / "summary.json"),
                 "results": str(out / "results.md"), "report": str(out / "report.html")},
        stats={"videos": results["videos"], "total_s": round(sum(timings.values()), 1),
               **{f"target {t}": "met" if met else "not met" for t, met in results.get("targets", {}).items()}},
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- results


def collect_results(out: Path, quality: dict[str, Any], timings: dict[str, float], videos: int) -> dict[str, Any]:
    """Every number of a run from the stages' metrics files; an evaluation that did not run is None."""
    def metrics(*parts: str) -> dict[str, Any] | None:
        path = out.joinpath(*parts, "metrics.json")
        return read_json(path) if path.is_file() else None

    zeroshot, retrieval, pretraining = metrics("eval", "zeroshot"), metrics("eval", "retrieval"), metrics("model")
    finetuned = {budget: {init: metrics("finetune", budget, init) for init in ("pretrained", "random")}
                 for budget in FINETUNE_BUDGETS}  # fmt: skip
    caption_file = out / "caption" / "comparison.json"
    forecast_files = (out / "eval" / "forecast" / "metrics.json", out / "finetune" / "forecast" / "metrics.json")
    return {
        "videos": videos,
        "timings_s": {name: round(seconds, 2) for name, seconds in timings.items()},
        "token_quality": quality,
        "pretraining": {"steps": pretraining["steps"], "eval": pretraining.get("eval", {}),
                        "eval_start": pretraining.get("eval_start", {})},
        "zeroshot": {"evaluated": zeroshot["evaluated"], **zeroshot["methods"]} if zeroshot else None,
        "retrieval": {"pool": retrieval["pool"], **retrieval["methods"]} if retrieval else None,
        "finetune": {budget: {init: {"test": m["test"], "epochs_run": m["epochs_run"], "examples": m["examples"]}
                              for init, m in runs.items()} for budget, runs in finetuned.items()}
        if all(m is not None for runs in finetuned.values() for m in runs.values()) else None,
        "captioning": read_json(caption_file) if caption_file.is_file() else None,
        "forecast": _forecast_results(*forecast_files) if all(f.is_file() for f in forecast_files) else None,
    }  # fmt: skip


def _forecast_results(zeroshot_file: Path, finetuned_file: Path) -> dict[str, Any]:
    """The forecasting rows of the demo: the priors and zero-shot VideoBERT (verb, noun and next visual word) from
    `evaluate --task forecast`, the fine-tuned forecaster (verb, noun) from `finetune --task forecast`."""
    zeroshot, finetuned = read_json(zeroshot_file), read_json(finetuned_file)
    rows = {name: dict(zeroshot["labels"][name]) for name in ("frequency_prior", "last_step_prior", "language_prior")}
    rows["videobert_zeroshot"] = dict(zeroshot["labels"]["videobert"])
    rows["videobert_finetuned"] = dict(finetuned["labels"]["finetuned"])
    for name, key in (("frequency_prior", "frequency_prior"), ("videobert_zeroshot", "videobert")):
        rows[name] |= {f"token_{k}": v for k, v in zeroshot["tokens"][key].items()}
    return {"examples": zeroshot["examples"], "training_examples": finetuned["examples"]["train"], "methods": rows}


def targets_met(results: dict[str, Any]) -> dict[str, bool]:
    """The targets of the default demo: zero-shot verb and noun top-1 >= 0.5 and >= 2x the language prior,
    fine-tuning from the pretrained model >= 10 points above a re-initialised one (mean of verb and noun top-1, few-shot
    budget: one labelled segment per verb+noun pair), and
    text-to-video R@1 >= 0.3 by the better ranking."""
    zs, prior = results["zeroshot"]["videobert"], results["zeroshot"]["language_prior"]
    met = {}
    for slot in ("verb", "noun"):
        top1, base = zs[f"{slot}_top1"], prior[f"{slot}_top1"]
        met[f"zeroshot {slot} top-1"] = top1 >= TARGETS["zeroshot_top1"] and top1 >= TARGETS["zeroshot_vs_prior"] * base
    ft = results["finetune"]["few-shot"]
    gain = _mean_top1(ft["pretrained"]["test"]) - _mean_top1(ft["random"]["test"])
    met["finetune gain"] = gain >= TARGETS["finetune_gain"]
    best_r1 = max(row["text_to_video"]["r1"] for name, row in results["retrieval"].items() if name != "pool")
    met["text-to-video R@1"] = best_r1 >= TARGETS["retrieval_r1"]
    return met


def _mean_top1(test: dict[str, dict[str, float]]) -> float:
    return sum(row["top1"] for row in test.values()) / len(test)


Table = tuple[str, list[str], list[list[Any]]]


def results_tables(results: dict[str, Any]) -> list[Table]:
    """(title, columns, rows) of every results table, percentages as in the paper; a table for each part of the
    results that ran."""
    pct = lambda x: round(100 * x, 1)  # noqa: E731
    split = results.get("recipe", {}).get("eval_split", "test")
    tables: list[Table] = []
    q = results["token_quality"]
    if q:
        tables.append((
            f"Visual words: held-out segment probe accuracy (%), {q.get('segments_heldout', 0)} segments",
            ["label", "chance (majority)", "bag of visual words", "continuous features"],
            [[label, pct(q[f"{label}_probe_chance"]), pct(q[f"{label}_probe_tokens"]), pct(q[f"{label}_probe_features"])]
             for label in ("verb", "noun") if f"{label}_probe_tokens" in q],
        ))  # fmt: skip
    p = results["pretraining"]["eval"]
    tables.append((
        f"Pretraining, held-out val videos after {results['pretraining']['steps']} steps",
        ["alignment accuracy (%)", "masked words, text only", "masked words, with video", "masked visual words"],
        [[pct(p.get("alignment_accuracy", float("nan"))), round(p.get("mlm_loss_text", float("nan")), 3),
          round(p.get("mlm_loss_text_video_words", float("nan")), 3), round(p.get("mlm_loss_video", float("nan")), 3)]],
    ))  # fmt: skip
    zs = results["zeroshot"]
    if zs is not None:
        tables.append((
            f"Zero-shot action classification (Table 1), {split} split, {zs['evaluated']} segments, accuracy (%)",
            ["method", "verb top-1", "verb top-5", "object top-1", "object top-5"],
            [[name, pct(zs[key]["verb_top1"]), pct(zs[key]["verb_top5"]), pct(zs[key]["noun_top1"]),
              pct(zs[key]["noun_top5"])] for key, name in (("language_prior", "language prior"), ("videobert", "VideoBERT"))],
        ))  # fmt: skip
    ft = results["finetune"]
    if ft is not None:
        tables.append((
            "Segment classification (verb+noun), same architecture and fine-tuning budget, test split, accuracy (%)",
            ["labelled training segments", "initialisation", "verb top-1", "verb top-5", "noun top-1", "noun top-5"],
            [[f"{ft[budget][key]['examples']['train']} ({budget})", name,
              *(pct(ft[budget][key]["test"][t][f"top{k}"]) for t in ("verb", "noun") for k in (1, 5))]
             for budget in ft
             for key, name in (("random", "random (re-initialised)"), ("pretrained", "VideoBERT pretrained"))],
        ))  # fmt: skip
    rt = results["retrieval"]
    if rt is not None:
        tables.append((
            f"Retrieval, {split} split, {rt['pool']} candidates, recall (%) and median rank",
            ["ranking", "direction", "R@1", "R@5", "R@10", "median rank"],
            [[name, direction.replace("_", " "), pct(row[direction]["r1"]), pct(row[direction]["r5"]),
              pct(row[direction]["r10"]), row[direction]["median_rank"]]
             for name, row in rt.items() if name != "pool" for direction in ("text_to_video", "video_to_text")],
        ))  # fmt: skip
    cap = results["captioning"]
    if cap is not None:
        from videobert.tasks.caption import METHOD_NAMES
        from videobert.tasks.caption_metrics import table3_cells

        columns, rows = table3_cells({METHOD_NAMES[m]: run["test"] for m, run in cap["methods"].items()})
        tables.append((f"Captioning (Table 3), {cap['examples']['train']} training captions, {split} split, "
                       f"{cap['examples']['test']} segments", columns, rows))
    fc = results.get("forecast")
    if fc is not None:
        names = {"frequency_prior": "frequency prior", "last_step_prior": "last-step prior (reads the annotations)",
                 "language_prior": "language prior", "videobert_zeroshot": "VideoBERT zero-shot",
                 "videobert_finetuned": f"VideoBERT fine-tuned ({fc['training_examples']} examples)"}  # fmt: skip
        cell = lambda row, key: pct(row[key]) if key in row else "-"  # noqa: E731
        tables.append((
            f"Next-step forecasting (recipe corpus), {split} split, {fc['examples']} steps, accuracy (%)",
            ["method", "verb top-1", "verb top-5", "noun top-1", "noun top-5", "visual word top-1", "visual word top-5"],
            [[name, *(cell(fc["methods"][key], f"{slot}_top{k}") for slot in ("verb", "noun", "token") for k in (1, 5))]
             for key, name in names.items()],
        ))  # fmt: skip
    if "targets" in results:
        tables.append((
            "Targets of the default demo", ["target", "met"],
            [[name, "yes" if met else "no"] for name, met in results["targets"].items()],
        ))  # fmt: skip
    return tables


def markdown_tables(tables: list[Table]) -> str:
    parts = []
    for title, columns, rows in tables:
        lines = [f"### {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _print_tables(tables: list[Table]) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console()
    for title, columns, rows in tables:
        table = RichTable(title=title)
        for i, column in enumerate(columns):
            table.add_column(column, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        console.print(table)


def write_report(out: Path, results: dict[str, Any], tables: list[Table], title: str = "videobert demo",
                 by: str = "pure") -> Path:  # fmt: skip
    """OUT/report.html: the tables, pretraining curves, visual words with their clips (`by`: "pure", the words whose
    clips most often show one annotated step; "frequent", the commonest words, for a corpus without annotations),
    and where those ran, confusion matrices and example captions beside their segment's thumbnail."""
    from videobert.report import Report, segment_thumbnail, tensorboard_scalars, token_examples
    from videobert.tokenizer.stages import manifest_paths

    report = Report(title)
    for title, columns, rows in tables:
        report.add_table(title, columns, rows)
    scalars = tensorboard_scalars(out / "model" / "logs")
    losses = {tag: points for tag, points in scalars.items() if "mlm_loss" in tag and "_text_video_" not in tag}
    accuracy = {tag: points for tag, points in scalars.items() if tag.endswith("alignment_accuracy")}
    for curve_title, series, y_label in (
        ("Pretraining: masked-token loss per regime (train and held-out)", losses, "loss"),
        ("Pretraining: alignment accuracy", accuracy, "accuracy"),
    ):
        if any(series.values()):  # no alignment without narrated videos
            report.add_curves(curve_title, series, y_label=y_label)
    report.add_gallery(
        "Visual words: the words whose clips most often show one step, with example clips" if by == "pure"
        else "Visual words: the most frequent words, with example clips",
        [(png, [caption]) for _, png, caption in token_examples(out / "work", n_words=8, clips_per_word=9, by=by)],
    )  # fmt: skip
    if results["finetune"] is not None:
        report.add_images(
            "Fine-tuned classifier (pretrained, all labels): confusion matrices on the test split (rows: truth)",
            [(f"{target}", out / "finetune" / "all" / "pretrained" / f"confusion_{target}.png")
             for target in ("verb", "noun")],
        )  # fmt: skip
    # Both VideoBERT captioners side by side on the same test segments: over the visual words alone, and with the
    # clip features (the demo's best row).
    captioners = [(mode, out / "caption" / mode / "captions.jsonl") for mode in ("pretrained", "pretrained+features")]
    captioners = [(mode, path) for mode, path in captioners if path.is_file()]
    if captioners:
        from videobert.tasks.caption import METHOD_NAMES

        paths = manifest_paths(out / "work")
        generated = {mode: [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:12]]
                     for mode, path in captioners}  # fmt: skip
        rows = generated[captioners[0][0]]
        report.add_gallery(
            "Captions of test segments (BART decoder on VideoBERT encoders)",
            [(segment_thumbnail(paths[r["video"]], r["start"], r["end"]),
              [f"{r['video']} {r['start']:.1f}-{r['end']:.1f} s", f"reference: {r['reference']}",
               *(f"{METHOD_NAMES[mode]}: {generated[mode][i]['generated']}" for mode, _ in captioners)])
             for i, r in enumerate(rows)],
        )  # fmt: skip
    path = out / "report.html"
    report.write(path)
    return path
