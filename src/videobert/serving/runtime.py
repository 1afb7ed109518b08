"""A VideoBERT export run by onnxruntime, without PyTorch: what a deployment (`index`, `serve`, `onnx-predict`)
loads. Nothing here imports torch or transformers (a test checks it in a fresh interpreter).

An export directory (written by `serving.export`) holds::

    export.json           parts, files, opset, joint layout, special tokens, labels, parity measured at export
    videobert.onnx        the encoder with its heads; videobert.int8.onnx when quantised
    tokenizer.json        the text tokenizer (Hugging Face `tokenizers` format)
    visual_vocab/         the visual vocabulary and how its features were made (video -> visual words)

The `videobert` graph takes `input_ids`, `attention_mask`, `token_type_ids` (batch, seq) and `mask_positions`
(batch, positions) and returns `mask_logits` (batch, positions, vocab): joint-vocabulary scores at the given
positions; `alignment_logits` (batch, 2); `pooled_embedding` (batch, hidden): the L2-normalised mean of the last
hidden states over the sequence (`tasks.retrieval.pooled_embeddings`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videobert.tasks.template import TEMPLATE, LabelSet, score_template
from videobert.tokenizer.hkmeans import VisualTokenizer
from videobert.tokenizer.joint import JointEncoder, JointLayout, pad_joint
from videobert.utils.errors import ConfigError, InputError
from videobert.utils.io import read_json

EXPORT_FILE = "export.json"
TOKENIZER_FILE = "tokenizer.json"
VISUAL_VOCAB_DIR = "visual_vocab"
EXPORT_FORMAT = "videobert-onnx/1"
PRECISIONS = ("fp32", "int8")
ALIGNED = 0  # alignment head: index 0 is "aligned" (model.configuration)


@dataclass(frozen=True)
class HeadOutputs:
    """What one pass of the `videobert` graph returns (module docstring)."""

    mask_logits: np.ndarray  # (batch, positions, vocab)
    alignment_logits: np.ndarray  # (batch, 2)
    pooled_embedding: np.ndarray  # (batch, hidden)


class WordPieceText:
    """The export's text tokenizer (Hugging Face `tokenizers`, no transformers) with the methods the joint encoder and
    `LabelSet` call on a transformers tokenizer."""

    def __init__(self, path: Path, unk_token: str):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(path))
        self.unk_token = unk_token
        self.unk_token_id = self.tokenizer.token_to_id(unk_token)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def text_ids(self, text: str) -> list[int]:
        return self.encode(text)


def read_export(directory: str | os.PathLike) -> dict[str, Any]:
    """The export.json of an export directory; `InputError` when `directory` is not one."""
    directory = Path(directory)
    path = directory / EXPORT_FILE
    if not path.is_file():
        raise InputError(directory, f"no {EXPORT_FILE}; not an export directory written by `videobert export`")
    meta = read_json(path)
    if meta.get("format") != EXPORT_FORMAT:
        raise InputError(path, f"format {meta.get('format')!r} is not {EXPORT_FORMAT!r}")
    return meta


def session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session over `path` with `threads` intra-op threads (one: a server runs several requests
    side by side, each on its own core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxVideoBert:
    """The `videobert` graph of an export directory with its tokenizers: joint sequences in, heads out.

    `precision` picks the fp32 or int8 graph (`PRECISIONS`); `threads` is onnxruntime's intra-op thread count.
    """

    def __init__(self, directory: str | os.PathLike, precision: str = "fp32", threads: int = 1):
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.directory = Path(directory)
        self.meta = read_export(self.directory)
        files = self.meta["parts"]["videobert"]["files"]
        if precision not in files:
            raise ConfigError(f"{self.directory}: no {precision} graph (exported: {', '.join(files)})")
        self.precision = precision
        self.session = session(self.directory / files[precision], threads)
        self.layout = JointLayout(**self.meta["layout"])
        tokens = self.meta["tokens"]
        self.mask_token = tokens["mask"]
        self.text = WordPieceText(self.directory / TOKENIZER_FILE, tokens["unk"])
        self.joint = JointEncoder(self.text.text_ids, self.layout)
        vocab_dir = self.directory / VISUAL_VOCAB_DIR
        self.visual_tokenizer = VisualTokenizer.from_pretrained(vocab_dir) if vocab_dir.is_dir() else None

    @property
    def hidden_size(self) -> int:
        return int(self.meta["parts"]["videobert"]["hidden_size"])

    def run(self, batch: dict[str, np.ndarray], mask_positions: np.ndarray | None = None) -> HeadOutputs:
        """One pass over an encoded batch; `mask_positions` (batch, positions) default to position 0 (`[CLS]`), for
        callers that read only the alignment and the embedding."""
        if mask_positions is None:
            mask_positions = np.zeros((len(batch["input_ids"]), 1), dtype=np.int64)
        feeds = {key: np.ascontiguousarray(batch[key], dtype=np.int64) for key in ("input_ids", "attention_mask", "token_type_ids")}
        feeds["mask_positions"] = np.ascontiguousarray(mask_positions, dtype=np.int64)
        return HeadOutputs(*self.session.run(["mask_logits", "alignment_logits", "pooled_embedding"], feeds))

    def masked_log_probs(self, batch: dict[str, np.ndarray], masked: np.ndarray) -> np.ndarray:
        """(num_masked, text_vocab) log-probabilities over the WordPiece vocabulary at the `masked` (batch, seq)
        positions, row-major (the contract of `tasks.template.score_template`)."""
        counts = masked.sum(axis=1)  # (batch,)
        width = max(int(counts.max()), 1)
        positions = np.zeros((len(masked), width), dtype=np.int64)  # padded with position 0, dropped below
        for row, columns in enumerate(masked):
            where = np.flatnonzero(columns)
            positions[row, : len(where)] = where
        logits = self.run(batch, positions).mask_logits  # (batch, width, vocab)
        keep = np.arange(width)[None, :] < counts[:, None]  # (batch, width)
        text = logits[keep][:, : self.layout.text_vocab_size].astype(np.float64)  # (num_masked, text_vocab)
        text -= text.max(axis=1, keepdims=True)
        return (text - np.log(np.exp(text).sum(axis=1, keepdims=True))).astype(np.float32)

    def template_scores(
        self,
        visual_tokens: Sequence[Sequence[int] | None],
        verbs: LabelSet,
        nouns: LabelSet,
        template: str = TEMPLATE,
        batch_size: int = 64,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Zero-shot label scores as `tasks.zeroshot.template_scores`, on this graph."""
        return score_template(
            self.joint.batch_encode, self.masked_log_probs, self.mask_token, self.layout.mask_token_id,
            self.layout.max_position_embeddings, visual_tokens, verbs, nouns, template, batch_size,
        )  # fmt: skip

    def embed(
        self,
        texts: Sequence[str] | None = None,
        visual_tokens: Sequence[Sequence[int]] | None = None,
        batch_size: int = 64,
    ) -> np.ndarray:
        """(n, hidden) float32 pooled embeddings of texts alone, videos alone, or both (`pooled_embedding`)."""
        n = len(texts) if texts is not None else len(visual_tokens)
        out = [np.zeros((0, self.hidden_size), np.float32)]
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size)
            batch = self.joint.batch_encode(
                None if texts is None else texts[part], None if visual_tokens is None else visual_tokens[part]
            )
            out.append(self.run(batch).pooled_embedding.astype(np.float32))
        return np.concatenate(out)

    def alignment(self, texts: Sequence[str], visual_tokens: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        """(n,) alignment log-odds of the pairs (texts[i], visual_tokens[i]), higher = more aligned
        (`tasks.retrieval.alignment_similarity` for the whole matrix)."""
        out = [np.zeros(0)]
        for start in range(0, len(texts), batch_size):
            part = slice(start, start + batch_size)
            logits = self.run(self.joint.batch_encode(texts[part], visual_tokens[part])).alignment_logits
            logits = logits.astype(np.float64)
            out.append(logits[:, ALIGNED] - logits[:, 1 - ALIGNED])
        return np.concatenate(out)

    def likelihood(self, text: str, visual_tokens: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        """(videos,) how much each video raises the masked-word likelihood of `text`: the pointwise mutual information
        of `tasks.retrieval.likelihood_similarity`, sum over the text's pieces of log P(piece | text with it masked,
        video) minus the same without video. One sequence per (piece, video)."""
        contexts: list[Sequence[int] | None] = [*visual_tokens, None]  # the last: without video
        encoded = [self.joint.encode(text, context) for context in contexts]
        # Pieces kept by every encoding (a long text is cut beside a long video): [CLS] text [>] / [CLS] text [SEP].
        pieces = min(e["token_type_ids"].count(0) - 2 for e in encoded)
        jobs = [(j, 1 + p) for j in range(len(contexts)) for p in range(pieces)]  # text pieces sit at 1..pieces
        scores = np.zeros(len(contexts))
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            batch = pad_joint(self.layout, [encoded[j] for j, _ in chunk])
            rows, positions = np.arange(len(chunk)), np.asarray([p for _, p in chunk])
            gold = batch["input_ids"][rows, positions].copy()
            batch["input_ids"][rows, positions] = self.layout.mask_token_id
            logits = self.run(batch, positions[:, None]).mask_logits[:, 0, : self.layout.text_vocab_size]  # (chunk, text)
            logits = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
            log_probs = logits[rows, gold] - np.log(np.exp(logits).sum(axis=1))
            np.add.at(scores, [j for j, _ in chunk], log_probs)
        return scores[:-1] - scores[-1]

    def label_sets(self, verbs: Sequence[str] | None = None, nouns: Sequence[str] | None = None) -> dict[str, LabelSet]:
        """The candidate verbs and nouns: the given ones, else those recorded at export from the work directory."""
        recorded = self.meta.get("labels") or {}
        sets = {}
        for slot, given in (("verb", verbs), ("noun", nouns)):
            values = [v for v in (given or []) if v.strip()] or recorded.get(slot, [])
            if not values:
                raise ConfigError(
                    f"no candidate {slot}s: pass them, or export with --work so that the export records the work "
                    f"directory's {slot} labels"
                )
            sets[slot] = LabelSet.from_values(values, self.text)
        return sets
