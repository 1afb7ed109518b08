"""Latency and throughput of the exported VideoBERT: PyTorch eager against ONNX fp32 and ONNX int8, same inputs, and
the size of the graphs.

    .venv/bin/python benchmarks/serving.py                       # MiniLM-size model (6 x 384), 2 threads
    .venv/bin/python benchmarks/serving.py --init scratch:2x256  # the demo's size
    .venv/bin/python benchmarks/serving.py --model MODEL --work WORK   # a model of yours
    .venv/bin/python benchmarks/serving.py --static                    # + static int8 calibrated on WORK's clips

Without --model, a VideoBERT is built the way `videobert pretrain --init INIT` starts one, over the visual vocabulary
of a small generated MiniCook work directory (made in a temporary directory unless --work is given); it is not
trained, which does not change its cost. `videobert export --quantize int8 --work WORK` writes the graphs (and prints
their parity with PyTorch on the work directory's test split).

Workload: the zero-shot input of `predict` and `evaluate` (`[CLS] now let me show you how to [MASK] the [MASK] [>] 3
visual words [SEP]`, the two masks scored), at batch 1 and 32. The three engines run interleaved call by call
(`--reps` rounds after 3 warm-up calls) so that load changes on a shared machine hit them alike; the median time per
call is reported. PyTorch runs the same module the export traced (`serving.export.VideoBertHeads`) under
`torch.inference_mode` with SDPA attention, as `predict` runs the model; both engines get --threads threads.

--static adds onnxruntime's static int8 quantisation (QDQ, weights per channel, activations calibrated with MinMax
on the zero-shot inputs of up to 64 training segments of the work directory) as a fourth engine, with its zero-shot
agreement, to compare with the dynamic quantisation `export` writes.
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
from pathlib import Path

import numpy as np
import torch


def build_work(root: Path) -> Path:
    from videobert.data.ingest import ingest
    from videobert.data.synth import synth
    from videobert.features.extract import extract
    from videobert.tokenizer.stages import tokenize, vocab

    corpus, work = root / "corpus", root / "work"
    synth(corpus, videos=30, seed=0, width=64, height=64)
    for report in (ingest(corpus, work), extract(work, backbone="pixels"), vocab(work, k=12, depth=2, seed=0),
                   tokenize(work)):  # fmt: skip
        assert report.ok, report
    return work


def build_model(work: Path, init: str, out: Path) -> Path:
    """`minilm` (the default text checkpoint) or `scratch:LAYERSxHIDDEN` (a random BERT with MiniLM's vocabulary)."""
    from videobert.model import VideoBertForPreTraining
    from videobert.tokenizer.hkmeans import VisualTokenizer
    from videobert.training.pretrain import write_scratch_bert

    text = None
    if init != "minilm":
        layers, hidden = (int(n) for n in init.removeprefix("scratch:").split("x"))
        text = write_scratch_bert(out.with_name("scratch_bert"), layers, hidden)
    visual_tokenizer = VisualTokenizer.from_pretrained(work / "vocab")
    VideoBertForPreTraining.from_text_checkpoint(text, visual_tokenizer=visual_tokenizer).save_pretrained(out)
    return out


def static_int8(export_dir: Path, work: Path, out: Path) -> Path:
    """A copy of `export_dir` whose int8 graph is statically quantised, calibrated on `work`'s training segments."""
    import shutil

    import pyarrow.compute as pc
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from videobert.data.ingest import load_segments
    from videobert.serving.runtime import OnnxVideoBert
    from videobert.tasks.evaluate import segment_visual_tokens
    from videobert.tasks.template import TEMPLATE

    shutil.copytree(export_dir, out, ignore=shutil.ignore_patterns("*.int8.onnx"))
    runner = OnnxVideoBert(out)
    segments = load_segments(work)
    train = segments.filter(pc.equal(segments["split"], "train"))
    visual = [v.tolist() for v in segment_visual_tokens(work / "tokens.parquet", train) if len(v)][:64]
    feeds = []
    for start in range(0, len(visual), 16):
        batch = runner.joint.batch_encode([TEMPLATE] * len(visual[start : start + 16]), visual[start : start + 16])
        masked = batch["input_ids"] == runner.layout.mask_token_id
        feeds.append({**batch, "mask_positions": np.stack([np.flatnonzero(row) for row in masked])})

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    quantize_static(out / "videobert.onnx", out / "videobert.int8.onnx", Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["MatMul", "Gather"], extra_options={"MatMulConstBOnly": True})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="a VideoBERT model directory (default: built, see above)")
    parser.add_argument("--work", type=Path, help="work directory for the vocabulary and the parity check")
    parser.add_argument("--init", default="minilm", help="how to build the model without --model (pretrain --init)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--static", action="store_true", help="also static int8 (see above)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from videobert.model import VideoBertForPreTraining
    from videobert.serving.export import VideoBertHeads, export
    from videobert.serving.runtime import OnnxVideoBert, read_export
    from videobert.tasks.template import TEMPLATE

    tmp = Path(tempfile.mkdtemp(prefix="videobert-serving-bench-"))
    work = args.work or build_work(tmp)
    model_dir = args.model or build_model(work, args.init, tmp / "model")
    started = time.perf_counter()
    export(model_dir, out=tmp / "export", quantize="int8", work=work)
    print(f"export (fp32 + int8 + parity): {time.perf_counter() - started:.0f} s")
    meta = read_export(tmp / "export")

    network = VideoBertForPreTraining.from_pretrained(model_dir).eval()
    heads = VideoBertHeads(network)
    engines = {precision: OnnxVideoBert(tmp / "export", precision=precision, threads=args.threads)
               for precision in ("fp32", "int8")}  # fmt: skip
    static_agreement = None
    if args.static:
        from videobert.serving.export import _zero_shot_agreement, _zero_shot_data

        static_dir = static_int8(tmp / "export", work, tmp / "static")
        engines["static int8"] = OnnxVideoBert(static_dir, precision="int8", threads=args.threads)
        static_agreement = _zero_shot_agreement(network, static_dir, {"int8": "videobert.int8.onnx"},
                                                _zero_shot_data(network, work, "test"))["int8"]  # fmt: skip
    rng = np.random.default_rng(0)
    results = {}
    for batch_size in (int(b) for b in args.batches.split(",")):
        visual = [rng.integers(0, network.config.visual_vocab_size, 3).tolist() for _ in range(batch_size)]
        batch = engines["fp32"].joint.batch_encode([TEMPLATE] * batch_size, visual)
        masked = batch["input_ids"] == network.config.mask_token_id
        positions = np.stack([np.flatnonzero(row) for row in masked])  # (batch, 2)
        tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
        tensor_positions = torch.from_numpy(positions)

        def eager() -> None:
            with torch.inference_mode():
                heads(**tensors, mask_positions=tensor_positions)

        calls = {"pytorch eager": eager}
        calls.update({f"onnx {p}": (lambda e=e: e.run(batch, positions)) for p, e in engines.items()})
        times: dict[str, list[float]] = {name: [] for name in calls}
        for rep in range(args.reps + 3):
            for name, call in calls.items():
                t = time.perf_counter()
                call()
                if rep >= 3:
                    times[name].append(time.perf_counter() - t)
        results[batch_size] = {name: statistics.median(values) for name, values in times.items()}
        results[batch_size]["seq"] = batch["input_ids"].shape[1]

    sizes = {p: meta["parts"]["videobert"]["bytes"][p] for p in ("fp32", "int8")}
    parity = meta["parity"]["videobert"]
    print()
    print(f"# {datetime.date.today()} {platform.node()}: {os.cpu_count()} CPUs, {args.threads} threads, torch "
          f"{torch.__version__}, model {network.config.num_hidden_layers} x {network.config.hidden_size}, vocabulary "
          f"{network.config.vocab_size}")  # fmt: skip
    print(f"# {shlex.join([sys.executable.rsplit('/', 1)[-1], *sys.argv])}")
    print("| batch | seq | engine | ms / call | sequences / s | speed-up vs eager |")
    print("|---|---|---|---|---|---|")
    for batch_size, row in results.items():
        for name in [name for name in row if name != "seq"]:
            print(f"| {batch_size} | {row['seq']} | {name} | {1e3 * row[name]:.2f} | {batch_size / row[name]:.0f} | "
                  f"{row['pytorch eager'] / row[name]:.2f}x |")  # fmt: skip
    print()
    print(f"graph size: fp32 {sizes['fp32'] / 1e6:.1f} MB, int8 {sizes['int8'] / 1e6:.1f} MB "
          f"(int8 / fp32 = {sizes['int8'] / sizes['fp32']:.3f})")
    for precision in ("fp32", "int8"):
        p = parity[precision]
        print(f"parity {precision}: max |diff| {p['max_abs_diff']:.2e}, zero-shot top-1 agreement verb "
              f"{p['verb_top1_agreement']:.3f} / noun {p['noun_top1_agreement']:.3f} on {p['zero_shot_segments']} "
              f"test segments")  # fmt: skip
    if static_agreement is not None:
        print(f"parity static int8: zero-shot top-1 agreement verb {static_agreement['verb_top1_agreement']:.3f} / "
              f"noun {static_agreement['noun_top1_agreement']:.3f}")


if __name__ == "__main__":
    main()
