"""Training throughput of ``videobert pretrain``'s step against ``transformers.BertForMaskedLM``, in one run.

    .venv/bin/python benchmarks/pretrain.py                  # MiniLM size, 20,736 visual words, batch 32 x 128
    .venv/bin/python benchmarks/pretrain.py --steps 3        # quicker
    .venv/bin/python benchmarks/pretrain.py --max-concat 12  # longer sequences (up to the 128 of DESIGN.md §6)

Data: MiniCook narration (``synth.plan_video``: sentences with their times) over random visual words (1.5 s clips)
in a temporary work directory; the stream and masking collator are the ones ``videobert pretrain`` uses (batch 32,
max_length 128, default regime mix and augmentations).

Three training steps (forward, backward, fused AdamW as in the Trainer), interleaved step by step so that load changes on a shared machine
hit all three alike; tokens/s counts real (unpadded) tokens:

1. **videobert**: `VideoBertForPreTraining` (SDPA attention, vocabulary logits only at masked positions, the
   alignment head) on the stream's length-bucketed batches, padded to their own longest sequence. The time includes
   drawing the batch from the stream and masking it.
2. **BertForMaskedLM, same batches**: the same size and vocabulary (6 x 384, 30,522 + 1 + 20,736 ids), its default
   attention, full-vocabulary logits at every position, on exactly the batches of (1), prepared in advance (data
   time not counted).
3. **BertForMaskedLM, padded to 128**: the same examples in the same batches, padded to max_length as a fixed-shape
   pipeline would (DESIGN.md §6 measured ~350 tokens/s for this on CPU).

On CUDA the steps run under bfloat16 autocast and the model FLOPs utilisation is printed (peak: --peak-tflops, by
default the dense bf16 peak of a known GPU).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from transformers import BertConfig, BertForMaskedLM

from videobert.data.schema import MANIFEST, SENTENCES, TOKENS
from videobert.data.synth import plan_video
from videobert.model import VideoBertForPreTraining
from videobert.training.data import MaskingCollator, PretrainCorpus, PretrainDataConfig, PretrainStream

CLIP_SECONDS = 1.5
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def write_corpus(root: Path, videos: int, visual_vocab: int, seed: int) -> Path:
    """manifest, sentences and tokens tables of ``videos`` MiniCook narrations over random visual words."""
    rng = np.random.default_rng(seed)
    manifest, sentences, tokens = [], [], []
    for i in range(videos):
        plan = plan_video(i, seed)
        name = f"{plan.name}.mp4"
        duration = plan.num_frames / plan.fps
        manifest.append({
            "video": name, "path": name, "duration": duration, "fps": float(plan.fps), "width": 96, "height": 96,
            "num_frames": plan.num_frames, "rotation": 0, "codec": "h264", "container": "mp4", "num_audio_streams": 0,
            "num_subtitle_streams": 0, "size_bytes": 0, "mtime": 0.0, "transcript": None, "split": "train",
        })  # fmt: skip
        for j, cue in enumerate(plan.cues):
            sentences.append({"video": name, "index": j, "start": cue.start, "end": cue.end, "text": cue.text,
                              "source": name})  # fmt: skip
        for clip in range(int(duration // CLIP_SECONDS)):
            tokens.append({"video": name, "clip": clip, "start": clip * CLIP_SECONDS,
                           "end": (clip + 1) * CLIP_SECONDS, "token": int(rng.integers(visual_vocab))})  # fmt: skip
    complete = MANIFEST.with_metadata({b"videobert.ingest.complete": b"1"})  # what load_manifest requires
    pq.write_table(pa.Table.from_pylist(manifest, schema=complete), root / "manifest.parquet")
    pq.write_table(pa.Table.from_pylist(sentences, schema=SENTENCES), root / "sentences.parquet")
    pq.write_table(pa.Table.from_pylist(tokens, schema=TOKENS), root / "tokens.parquet")
    return root


def step_flops(config: BertConfig, lengths: list[int], width: int, predicted: int) -> float:
    """Training FLOPs (forward + backward = 3 x forward) of one batch: matmuls of the encoder over ``width``-padded
    sequences, attention scores and values, and the vocabulary projection of ``predicted`` positions."""
    h, layers, ff = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    tokens = len(lengths) * width
    dense = 2 * tokens * layers * (4 * h * h + 2 * h * ff)
    attention = 2 * 2 * len(lengths) * layers * width * width * h
    head = 2 * predicted * (h * h + h * config.vocab_size)
    return 3.0 * (dense + attention + head)


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="measured steps of each method (after one warm-up)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--visual-vocab", type=int, default=12**4)
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--max-concat", type=int, default=3,
                        help="most sentences per sequence; MiniCook sentences are short, 12 fills 128 tokens")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOPS of the GPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    model = VideoBertForPreTraining.from_text_checkpoint(visual_vocab_size=args.visual_vocab, visual_init="random")
    config = model.config
    baseline_config = BertConfig(**{k: getattr(config, k) for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
        "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "vocab_size", "pad_token_id")})  # fmt: skip
    baseline = BertForMaskedLM(baseline_config)
    print(f"attention: videobert {model.config._attn_implementation}, baseline {baseline.config._attn_implementation}",
          file=sys.stderr)  # fmt: skip
    # Fused AdamW, the Trainer's default optimizer (transformers 5, torch >= 2.8), for both.
    optimizers = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True) for m in (model, baseline)}
    for m in (model, baseline):
        m.to(device).train()

    with tempfile.TemporaryDirectory() as folder:
        corpus = PretrainCorpus.from_work_dir(write_corpus(Path(folder), args.videos, args.visual_vocab, seed=0))
        data = PretrainDataConfig(batch_size=args.batch_size, max_length=args.max_length, max_concat=args.max_concat)
        stream = iter(PretrainStream(corpus, corpus.train_videos, model.tokenizer, data, train=True))
        collator = MaskingCollator(model.tokenizer)
        records = {name: {"seconds": [], "tokens": [], "flops": []} for name in ("videobert", "same batches", "padded to 128")}

        def videobert_step(out: dict) -> None:
            batch = collator(next(stream))
            batch.pop("regime")
            out["batch"] = batch
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            optimizers[id(model)].step()
            optimizers[id(model)].zero_grad(set_to_none=True)

        def baseline_step(batch: dict) -> None:
            with autocast:
                loss = baseline(**batch).loss
            loss.backward()
            optimizers[id(baseline)].step()
            optimizers[id(baseline)].zero_grad(set_to_none=True)

        for step in range(args.steps + 1):  # step 0 warms up every path
            out: dict = {}
            seconds = timed(lambda: videobert_step(out), device)
            batch = out["batch"]
            lengths = batch["attention_mask"].sum(1).tolist()
            predicted = int((batch["labels"] != -100).sum())
            same = {k: batch[k].to(device) for k in ("input_ids", "token_type_ids", "attention_mask", "labels")}
            padded = {k: torch.nn.functional.pad(v, (0, args.max_length - v.shape[1]), value=-100 if k == "labels" else 0)
                      for k, v in same.items()}  # fmt: skip
            runs = {
                "videobert": (seconds, batch["input_ids"].shape[1], predicted),
                "same batches": (timed(lambda: baseline_step(same), device), same["input_ids"].shape[1], None),
                "padded to 128": (timed(lambda: baseline_step(padded), device), args.max_length, None),
            }
            for name, (secs, width, masked_only) in runs.items():
                if step == 0:
                    continue
                predicted_positions = masked_only if masked_only is not None else len(lengths) * width
                records[name]["seconds"].append(secs)
                records[name]["tokens"].append(sum(lengths))
                records[name]["flops"].append(step_flops(config, lengths, width, predicted_positions))
            print(f"step {step}: " + ", ".join(f"{name} {secs:.2f} s" for name, (secs, _, _) in runs.items()),
                  file=sys.stderr)  # fmt: skip

    peak = args.peak_tflops
    if device.type == "cuda" and peak is None:
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    # Throughput over all measured steps (total tokens / total seconds): batches differ in length, and every method
    # ran on each of them.
    rates = {name: (sum(r["tokens"]) / sum(r["seconds"]), sum(r["flops"]) / sum(r["seconds"])) for name, r in records.items()}
    machine = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {args.threads} thread(s) of {os.cpu_count()} cores"
    )
    command = "python benchmarks/pretrain.py " + shlex.join(sys.argv[1:])
    ours = rates["videobert"][0]
    print(f"load average after: {os.getloadavg()[0]:.1f}; mean real tokens per batch: "
          f"{statistics.mean(records['videobert']['tokens']):.0f} of {args.batch_size} x {args.max_length}")  # fmt: skip
    header = "| date | machine | command | videobert tokens/s | BertForMaskedLM same batches | speed-up | BertForMaskedLM padded to 128 | speed-up |"
    if peak:
        header += " MFU videobert | MFU same batches |"
    print("\n" + header)
    print("|" + "---|" * (header.count("|") - 1))
    row = (
        f"| {datetime.date.today()} | {machine} | `{command.strip()}` | {ours:,.0f} | {rates['same batches'][0]:,.0f} | "
        f"{ours / rates['same batches'][0]:.2f}x | {rates['padded to 128'][0]:,.0f} | {ours / rates['padded to 128'][0]:.2f}x |"
    )
    if peak:
        row += f" {rates['videobert'][1] / (peak * 1e12):.1%} | {rates['same batches'][1] / (peak * 1e12):.1%} |"
    print(row)


if __name__ == "__main__":
    main()
