"""The `export` stage: a VideoBERT model directory -> ONNX graphs (fp32, and int8 with `--quantize int8`) that
onnxruntime runs without PyTorch (`serving.runtime` documents the directory and the graphs).

Exportable parts
    Each graph is one entry of `PARTS`, a name -> builder map: a builder gets the loaded sources (`ExportSources`)
    and returns a `Graph` (module, named example inputs and outputs, dynamic axes) or None when its part does not
    apply. Built in: ``videobert`` (encoder + masked-token scores at given positions + alignment + pooled embedding)
    , ``caption_encoder`` (with ``--captioner``: the caption checkpoint's encoder, whose states a BART decoder
    attends to) and ``clip_encoder`` (when the model's visual words were made with a learned clip encoder, `extract
    --backbone encoder:DIR`: its clip vectors from the sampled, normalised frames and the clip's descriptor). Another
    part is one more builder (`register_part`); `export` writes, quantises and checks it like the others.

Export and quantisation
    `torch.onnx.export` with the dynamo exporter (the TorchScript exporter traced a graph that was wrong for other
    shapes), batch and sequence axes dynamic, the opset recorded. int8 is onnxruntime's dynamic quantisation
    (weights int8 per channel, activations quantised on the fly): it needs no calibration data, and the encoder's
    cost is in its MatMuls, which it covers.

Parity (printed and stored in export.json)
    * the largest absolute difference of every output against PyTorch on fixed inputs (a seeded batch of text + video,
      video-only and text-only sequences of different lengths, so padding is exercised);
    * with ``--work``: top-1 agreement of zero-shot verb and noun between PyTorch and each graph on the work
      directory's test split (the labels are recorded, so that `onnx-predict` needs no work directory).

The directory is written next to OUT and renamed onto it at the end, so OUT is a whole export or untouched.
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videobert.model import VideoBertForPreTraining, require_tokenizer
from videobert.model.modeling import VISUAL_VOCAB_DIR
from videobert.serving.runtime import EXPORT_FILE, EXPORT_FORMAT, TOKENIZER_FILE, OnnxVideoBert, session
from videobert.tasks.template import SLOTS, TEMPLATE, LabelSet
from videobert.tasks.zeroshot import template_scores
from videobert.tokenizer.hkmeans import FeatureSource
from videobert.tokenizer.joint import JointLayout
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import file_sha256, write_json
from videobert.utils.stage import StageReport

STAGE = "export"
FORMATS = ("onnx",)
QUANTIZE = ("none", "int8")
OPSET = 18
INT8_SUFFIX = ".int8.onnx"


@dataclass
class Graph:
    """One exportable part: `module(**inputs)` returns the tensors named `outputs`, in order."""

    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: tuple[str, ...]
    dynamic: dict[str, dict[int, str]]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportSources:
    """What the builders read: the VideoBERT model (loaded), its directory and the optional captioner directory."""

    model_dir: Path
    network: VideoBertForPreTraining
    captioner: Path | None = None

    @property
    def feature_source(self) -> FeatureSource | None:
        """How the model's visual vocabulary's features were made (a clip-encoder part checks its backbone)."""
        vt = self.network.visual_tokenizer
        return None if vt is None else vt.feature_source


class VideoBertHeads(nn.Module):
    """The `videobert` graph (`serving.runtime`): the encoder and all three heads in one pass."""

    def __init__(self, model: VideoBertForPreTraining):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, mask_positions):
        out = self.model.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True)
        hidden = out.last_hidden_state  # (batch, seq, hidden)
        alignment_logits = self.model.cls.seq_relationship(out.pooler_output)  # (batch, 2)
        index = mask_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])  # (batch, positions, hidden)
        # Only the asked positions go through the vocabulary projection, as in training (modeling.py).
        mask_logits = self.model.cls.predictions(hidden.gather(1, index))  # (batch, positions, vocab)
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
        pooled = F.normalize((hidden * weights).sum(dim=1) / weights.sum(dim=1), dim=-1)  # (batch, hidden)
        return mask_logits, alignment_logits, pooled


class CaptionEncoderStates(nn.Module):
    """The `caption_encoder` graph: a caption checkpoint's encoder states as its decoder reads them (projected to the
    decoder's width when the two differ)."""

    def __init__(self, captioning: nn.Module):
        super().__init__()
        self.encoder = captioning.encoder
        self.projection = captioning.encoder_projection

    def forward(self, input_ids, attention_mask, token_type_ids, visual_features=None):
        states = self.encoder(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, visual_features=visual_features
        ).last_hidden_state  # (batch, seq, hidden)
        return states if self.projection is None else self.projection(states)


def fixed_batch(network: VideoBertForPreTraining, seed: int = 0) -> dict[str, torch.Tensor]:
    """The parity inputs: a seeded text + video, video-only and text-only sequence of different lengths, and two mask
    positions per sequence."""
    rng = np.random.default_rng(seed)
    config = network.config
    visual = [rng.integers(0, config.visual_vocab_size, size=n).tolist() for n in (7, 12)]
    batch = network.tokenizer.batch_encode(
        ["now let me show you how to cut the tomato", None, "stir the soup"], [visual[0], visual[1], None]
    )
    lengths = batch["attention_mask"].sum(dim=1)  # (3,)
    positions = torch.stack([torch.tensor([1, int(n) - 2]) for n in lengths])  # (3, 2) inside each sequence
    return {**batch, "mask_positions": positions}


def _videobert_graph(sources: ExportSources) -> Graph:
    network = sources.network
    return Graph(
        module=VideoBertHeads(network),
        inputs=fixed_batch(network),
        outputs=("mask_logits", "alignment_logits", "pooled_embedding"),
        dynamic={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "token_type_ids": {0: "batch", 1: "sequence"},
            "mask_positions": {0: "batch", 1: "positions"},
        },
        info={"hidden_size": network.config.hidden_size, "vocab_size": network.config.vocab_size},
    )


def _caption_encoder_graph(sources: ExportSources) -> Graph | None:
    if sources.captioner is None:
        return None
    from videobert.model.captioning import VideoBertForCaptioning

    captioning = VideoBertForCaptioning.from_pretrained(sources.captioner, attn_implementation="eager").eval()
    batch = fixed_batch(sources.network)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    dynamic = {key: {0: "batch", 1: "sequence"} for key in inputs}
    if captioning.config.reads_features:
        generator = torch.Generator().manual_seed(0)
        shape = (*batch["input_ids"].shape, captioning.config.feature_dim)
        inputs["visual_features"] = torch.randn(shape, generator=generator)  # (batch, seq, feature_dim)
        dynamic["visual_features"] = {0: "batch", 1: "sequence"}
    return Graph(
        CaptionEncoderStates(captioning), inputs, ("encoder_states",), dynamic,
        info={"encoder_mode": captioning.config.encoder_mode, "captioner": str(sources.captioner)},
    )  # fmt: skip


class ClipEncoderVectors(nn.Module):
    """The `clip_encoder` graph: a learned clip encoder's clip vectors from its model input (the sampled frames,
    normalised, with their motion channels: `ClipEncoderModel.pixel_values`) and, when it reads one, the clip's
    weight-free descriptor (`features.backbones.PixelsBackbone` at the encoder's frame size)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values, descriptor=None):
        return self.encoder(pixel_values=pixel_values, descriptor=descriptor).clip_embeds  # (batch, hidden)


def _clip_encoder_graph(sources: ExportSources) -> Graph | None:
    """The learned clip encoder the model's visual words were made with (`extract --backbone encoder:DIR`)."""
    source = sources.feature_source
    if source is None or not source.backbone.startswith("encoder:"):
        return None
    from videobert.model.clip_encoder import ClipEncoderModel

    directory = Path(source.backbone.partition(":")[2])
    if not directory.is_dir():
        raise InputError(directory, "the clip encoder the model's features were made with is gone; it is needed to "
                                    "export the model's clip encoder")  # fmt: skip
    encoder = ClipEncoderModel.from_pretrained(directory).eval()
    config = encoder.config
    generator = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (3, 2 * config.num_frames, config.image_size, config.image_size, 3),
                          generator=generator, dtype=torch.uint8)  # fmt: skip
    inputs = {"pixel_values": encoder.pixel_values(clips)}  # (batch, frames, channels, side, side)
    dynamic = {"pixel_values": {0: "batch"}}
    if config.descriptor is not None:
        inputs["descriptor"] = torch.randn(3, config.descriptor_dim, generator=generator)
        dynamic["descriptor"] = {0: "batch"}
    return Graph(ClipEncoderVectors(encoder), inputs, ("clip_embeds",), dynamic,
                 info={"clip_encoder": str(directory), "descriptor": config.descriptor})  # fmt: skip


#: part name -> builder (module docstring); the order is the export order.
PARTS: dict[str, Callable[[ExportSources], Graph | None]] = {
    "videobert": _videobert_graph,
    "caption_encoder": _caption_encoder_graph,
    "clip_encoder": _clip_encoder_graph,
}


def register_part(name: str, builder: Callable[[ExportSources], Graph | None]) -> None:
    """Make `name` an exportable part (e.g. a learned clip encoder); `builder` returns None where it does not apply."""
    PARTS[name] = builder


def export(
    model: Path,
    *,
    out: Path,
    format: str = "onnx",
    quantize: str = "none",
    captioner: Path | None = None,
    work: Path | None = None,
    split: str = "test",
    opset: int = OPSET,
) -> StageReport:
    """Export a pretrained VideoBERT to ONNX for serving without PyTorch: the encoder with its masked-token,
    alignment and embedding heads (and a captioner's encoder), dynamic batch and sequence axes, optionally int8.

    Prints the parity with PyTorch: the largest output difference on fixed inputs and, with --work, the top-1
    agreement of zero-shot verb and noun on the work directory's test split.

    Args:
        model: Model directory written by `videobert pretrain` (with visual_vocab/).
        out: Export directory to write (replaced whole when it exists).
        format: Export format; onnx.
        quantize: none, or int8 (onnxruntime dynamic quantisation, written beside the fp32 graphs).
        captioner: Caption checkpoint directory (`videobert finetune --task caption`) whose encoder to export too.
        work: Work directory: its test split checks zero-shot agreement, its labels are recorded for predictions.
        split: The work directory's split for the zero-shot agreement.
        opset: ONNX opset to export with.
    """
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    model, out = Path(model), Path(out)
    if not model.is_dir():  # from_pretrained would take a missing path for a Hub id and go online
        raise InputError(model, "model directory not found")
    # Eager attention: the plainest graph to export, and the one onnxruntime's fusions recognise.
    network = VideoBertForPreTraining.from_pretrained(model, attn_implementation="eager").eval()
    require_tokenizer(network, model)
    text_tokenizer = network.tokenizer.text_tokenizer
    if getattr(text_tokenizer, "backend_tokenizer", None) is None:
        raise ConfigError(f"{model}: the text tokenizer has no fast (tokenizers) version to export")
    sources = ExportSources(model, network, None if captioner is None else Path(captioner))
    zero_shot_data = _zero_shot_data(network, Path(work), split) if work is not None else None

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        meta = _write_export(staging, sources, quantize, opset, zero_shot_data)
        _replace_dir(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _print_parity(meta)
    stats: dict[str, Any] = {"opset": opset, "parts": ", ".join(meta["parts"])}
    for part, parity in meta["parity"].items():
        for precision, values in parity.items():
            for key, value in values.items():
                stats[f"{part}.{precision}.{key}"] = value
    for part, info in meta["parts"].items():
        for precision, size in info["bytes"].items():
            stats[f"{part}.{precision}.MB"] = size / 1e6
    return StageReport(STAGE, done=len(meta["parts"]), outputs={"export": str(out)}, stats=stats)


def _write_export(
    directory: Path, sources: ExportSources, quantize: str, opset: int, zero_shot_data: dict[str, Any] | None
) -> dict[str, Any]:
    """Every part's graphs, the tokenizers and export.json into `directory`; returns export.json's content."""
    network = sources.network
    config = network.config
    parts: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    for name, builder in PARTS.items():
        graph = builder(sources)
        if graph is None:
            continue
        files = {"fp32": f"{name}.onnx"}
        _export_graph(graph, directory / files["fp32"], opset)
        if quantize == "int8":
            files["int8"] = f"{name}{INT8_SUFFIX}"
            quantize_int8(directory / files["fp32"], directory / files["int8"])
        parts[name] = {
            "files": files,
            "inputs": list(graph.inputs),
            "outputs": list(graph.outputs),
            "bytes": {precision: (directory / file).stat().st_size for precision, file in files.items()},
            **graph.info,
        }
        parity[name] = {
            precision: {"max_abs_diff": _max_abs_diff(graph, directory / file)} for precision, file in files.items()
        }

    network.tokenizer.text_tokenizer.backend_tokenizer.save(str(directory / TOKENIZER_FILE))
    if network.visual_tokenizer is not None:
        shutil.copytree(sources.model_dir / VISUAL_VOCAB_DIR, directory / VISUAL_VOCAB_DIR)
    weights = sources.model_dir / "model.safetensors"
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "model": str(sources.model_dir),
        "model_sha256": file_sha256(weights) if weights.is_file() else None,
        "opset": opset,
        "torch": torch.__version__,
        "parts": parts,
        "layout": JointLayout.of(config).to_dict(),
        "tokens": {"mask": config.mask_token, "unk": network.tokenizer.text_tokenizer.unk_token},
        "labels": None,
        "parity": parity,
    }
    write_json(directory / EXPORT_FILE, meta)
    if zero_shot_data is not None:
        meta["labels"] = {slot: list(zero_shot_data["labels"][slot].names) for slot in SLOTS}
        agreement = _zero_shot_agreement(network, directory, parts["videobert"]["files"], zero_shot_data)
        for precision, values in agreement.items():
            parity["videobert"][precision].update(values)
        write_json(directory / EXPORT_FILE, meta)
    return meta


def _export_graph(graph: Graph, path: Path, opset: int) -> None:
    """`torch.onnx.export` (dynamo) of `graph` with its dynamic axes, weights inside the one file."""
    dims: dict[str, torch.export.Dim] = {}
    dynamic_shapes = {
        name: {axis: dims.setdefault(dim, torch.export.Dim(dim)) for axis, dim in axes.items()}
        for name, axes in graph.dynamic.items()
    }
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's business
        program = torch.onnx.export(
            graph.module.eval(), (), kwargs=graph.inputs, input_names=list(graph.inputs),
            output_names=list(graph.outputs), dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True,
            external_data=False, verbose=False, report=False,
        )  # fmt: skip
    program.save(str(path), external_data=False)


def quantize_int8(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8 quantisation of `source` (weights per channel) into `target`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)


def _max_abs_diff(graph: Graph, path: Path) -> float:
    """Largest absolute difference over all outputs between `graph.module` and the ONNX file on its example inputs."""
    with torch.no_grad():
        expected = graph.module(**graph.inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session(path).run(list(graph.outputs), {k: v.numpy() for k, v in graph.inputs.items()})
    return float(max(np.abs(g - e.numpy()).max() for g, e in zip(got, expected)))


def _zero_shot_data(network: VideoBertForPreTraining, work: Path, split: str) -> dict[str, Any]:
    """The candidate labels (every split) and the visual words of the `split` segments that have video."""
    import pyarrow.compute as pc

    from videobert.data.ingest import load_segments
    from videobert.model import visual_tokenizer_from_work_dir
    from videobert.tasks.evaluate import segment_visual_tokens
    from videobert.workdir import WorkDir

    wd = WorkDir(work)
    visual_tokenizer_from_work_dir(work, network.config)  # the work dir's words must be the model's
    segments = load_segments(work)
    in_split = segments.filter(pc.equal(segments["split"], split))
    visual = [v.tolist() for v in segment_visual_tokens(wd.require(wd.tokens, "tokenize"), in_split) if len(v)]
    if not visual:
        raise InputError(wd.segments, f"no segment of split {split!r} has video; cannot check zero-shot agreement")
    labels = {slot: LabelSet.from_values(segments[slot].to_pylist(), network.tokenizer.text_tokenizer) for slot in SLOTS}
    return {"labels": labels, "visual": visual, "split": split}


def _zero_shot_agreement(
    network: VideoBertForPreTraining, directory: Path, files: dict[str, str], data: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """precision -> {segments, verb_top1_agreement, noun_top1_agreement}: the share of segments whose top-1 label is
    the same as PyTorch's."""
    labels, visual = data["labels"], data["visual"]
    with torch.inference_mode():
        reference = template_scores(network, network.tokenizer, visual, labels["verb"], labels["noun"], TEMPLATE)
    out = {}
    for precision in files:
        runner = OnnxVideoBert(directory, precision=precision)
        scores = runner.template_scores(visual, labels["verb"], labels["noun"], TEMPLATE)
        out[precision] = {"zero_shot_split": data["split"], "zero_shot_segments": len(visual)}
        for slot, ref, got in zip(SLOTS, reference, scores):
            out[precision][f"{slot}_top1_agreement"] = float((ref.argmax(axis=1) == got.argmax(axis=1)).mean())
    return out


def _replace_dir(staging: Path, out: Path) -> None:
    """Move the finished `staging` directory onto `out`; an existing `out` is removed only once the new one is whole."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)


def _print_parity(meta: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ONNX parity with PyTorch (opset {meta['opset']})")
    for header in ("part", "graph", "size (MB)", "max |diff|", "verb top-1 agreement", "noun top-1 agreement"):
        table.add_column(header, justify="left" if header in ("part", "graph") else "right")
    for part, by_precision in meta["parity"].items():
        for precision, values in by_precision.items():
            agree = [values.get(f"{slot}_top1_agreement") for slot in SLOTS]
            table.add_row(
                part, precision, f"{meta['parts'][part]['bytes'][precision] / 1e6:.2f}", f"{values['max_abs_diff']:.2e}",
                *("-" if a is None else f"{100 * a:.1f} %" for a in agree),
            )  # fmt: skip
    Console().print(table)
